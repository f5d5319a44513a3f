"""Checks that turn what a scenario saw into one verdict line.

Every check returns None when it holds, or a short, specific reason (counts, order ids, statuses, audit
lines) when it does not. A scenario holds when all of its checks do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from loadtests.chaos.load import HttpStats, OrderRecord

MAX_SHOWN = 5


def _some(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_SHOWN])
    return shown + (f" (+{len(items) - MAX_SHOWN} more)" if len(items) > MAX_SHOWN else "")


@dataclass
class Verdict:
    scenario: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was seen, printed above the verdict

    def check(self, reason: str | None) -> None:
        if reason:
            self.reasons.append(reason)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def holds(self) -> bool:
        return not self.reasons

    def line(self) -> str:
        return f"{self.scenario}: holds" if self.holds else f"{self.scenario}: falls short: {'; '.join(self.reasons)}"


def load_summary(records: Sequence[OrderRecord]) -> str:
    outcomes = Counter(r.outcome + (f" ({r.failure_reason})" if r.failure_reason else "") for r in records)
    return f"{len(records)} orders: " + ", ".join(f"{n} {o}" for o, n in outcomes.most_common())


def key_in_use_note(records: Sequence[OrderRecord]) -> str | None:
    """How long careful clients were kept waiting on their own key (409 idempotency-key-in-use)."""
    waits = []
    for r in records:
        times = [at for answer, at in zip(r.answers, r.answer_times, strict=False)
                 if answer == "409 idempotency_key_in_use"]
        if times:
            end = r.answer_times[-1] if r.answer_times else times[-1]
            waits.append(end - times[0])
    if not waits:
        return None
    return (f"{len(waits)} order(s) were answered 409 idempotency-key-in-use on a retry, for up to "
            f"{max(waits):.0f}s before their answer")


def check_placed(records: Sequence[OrderRecord], minimum: int = 1) -> str | None:
    accepted = [r for r in records if r.order_id is not None]
    if len(accepted) < minimum:
        return f"the load placed only {len(accepted)} order(s) (fewer than {minimum}): the fault met no traffic"
    return None


def in_flight_during(records: Sequence[OrderRecord], started: float, ended: float) -> list[OrderRecord]:
    """Orders begun before the fault ended and not final before it started: the ones the fault could hurt."""
    return [r for r in records if r.started <= ended and (r.finished is None or r.finished >= started)]


def check_fault_met_orders(records: Sequence[OrderRecord], started: float, ended: float) -> str | None:
    if not in_flight_during(records, started, ended):
        return "no order was in flight while the fault lasted: it met no traffic"
    return None


def check_final_in_time(records: Sequence[OrderRecord], bound_seconds: float) -> str | None:
    """Every order the clients started has a final answer within the bound after the fault ended."""
    open_ = [r for r in records if not r.final]
    if not open_:
        return None
    described = [f"order {r.order_id} {r.outcome or 'PENDING'}" if r.order_id is not None
                 else f"key {r.key[:8]} {r.outcome} (answers: {', '.join(r.answers[-3:]) or 'none'})" for r in open_]
    return f"{len(open_)} order(s) not final {bound_seconds:.0f}s after the fault ended: {_some(described)}"


def check_database_final(pending: Sequence[int]) -> str | None:
    if pending:
        return f"{len(pending)} order(s) still PENDING in the database at the end: ids {_some(list(pending))}"
    return None


def check_api_matches_database(records: Sequence[OrderRecord], statuses: dict[int, str]) -> str | None:
    """What the clients were told is what the database holds."""
    mismatched = [f"order {r.order_id}: client saw {r.outcome}, database {statuses.get(r.order_id, 'no row')}"
                  for r in records if r.order_id is not None and r.outcome in ("CONFIRMED", "FAILED")
                  and statuses.get(r.order_id) != r.outcome]
    if mismatched:
        return f"{len(mismatched)} order(s) differ between the API and the database: {_some(mismatched)}"
    return None


def check_no_server_errors(http: HttpStats) -> str | None:
    if not http.server_errors:
        return None
    by_endpoint = Counter(e.split(" 500 ", 1)[0] for e in http.server_errors)
    return (f"{len(http.server_errors)} answer(s) were 500 ("
            + ", ".join(f"{n} on {endpoint}" for endpoint, n in by_endpoint.most_common()) + ")")


def check_retry_after(http: HttpStats) -> str | None:
    if not http.without_retry_after:
        return None
    return f"{len(http.without_retry_after)} transient 503(s) without Retry-After: {_some(http.without_retry_after)}"


def check_saga_answers(records: Sequence[OrderRecord]) -> str | None:
    """Saga mode accepts an order with 202 on the first try and on every replay (never 201)."""
    odd = [f"key {r.key[:8]} (order {r.order_id}): {', '.join(r.answers)}" for r in records
           if any(a.startswith("201") for a in r.answers)]
    if odd:
        return f"{len(odd)} POST(s) in saga mode answered 201 instead of 202: {_some(odd)}"
    return None


def check_expected_outcomes(records: Sequence[OrderRecord], allowed_reasons: Iterable[str] = ()) -> str | None:
    """An order with a good card and address fails only for a business reason (stock, funds)."""
    allowed = {"out_of_stock", "insufficient_funds", *allowed_reasons}
    failed = [r for r in records if r.would_succeed and r.outcome == "FAILED" and r.failure_reason not in allowed]
    rejected = [r for r in records if r.would_succeed and r.outcome.startswith("rejected:")
                and r.outcome.split(":", 1)[1] not in allowed]
    problems = [f"order {r.order_id} FAILED ({r.failure_reason or 'no reason'})" for r in failed]
    problems += [f"key {r.key[:8]} {r.outcome}" for r in rejected]
    if problems:
        reasons = Counter(r.failure_reason or "?" for r in failed) + Counter(r.outcome for r in rejected)
        return (f"{len(problems)} order(s) that would otherwise succeed did not ("
                + ", ".join(f"{n} {why}" for why, n in reasons.most_common()) + f"): {_some(problems)}")
    return None


def check_audit(returncode: int | None, lines: Sequence[str]) -> str | None:
    if returncode == 0:
        return None
    failing = [line.strip() for line in lines if " FAIL " in f" {line} "]
    if returncode is None:
        return "manage.py audit did not finish"
    shown = " | ".join(failing) if failing else " | ".join(line.strip() for line in lines[-3:])
    return f"audit exit {returncode}: {shown}"


def check_processes(exits_summary: str) -> str | None:
    if exits_summary:
        return f"processes died on their own and were restarted by the driver: {exits_summary}"
    return None
