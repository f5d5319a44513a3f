"""A flow's steps as a choreography: services reacting to each other's events, no coordinator.

The same tuple of shop.steps.Step every other coordinator runs is read as a chain of events. Each step has
three: done (its action committed), failed (its action failed for good) and undone (its compensation
committed). From the tuple alone (`Choreography.reactions`):

- the action of step i reacts to "done" of step i-1 (the leading steps without an action were done by
  whoever started the flow, which emits the first event) and emits "done" or "failed" of step i;
- the compensation of step j reacts to "failed" of any later step with no compensable step in between, and
  to "undone" of the next compensable step above it (the next one down the undo chain), and emits "undone";
  the highest compensable step also reacts to the flow's `timed_out` event (the sweeper's).

So a failure walks down the steps that acted, in reverse, each service undoing its own part on hearing that
the one above it undid its own. A service learns nothing else: what it reacts to and what it emits
(`reacts_to`, `emits`).

Every event is a message through the broker: written, in the same transaction as the business change it
announces, to the emitting service's outbox (sagas.outbox, the saga's relay publishes it), one message per
reacting service, to the Celery task `<service>.choreography` on the service's queue. Delivery is at least
once; effects are exactly once through the saga participants' own inbox and step guard
(sagas.participants.message_claim): a duplicate finds its inbox row and changes nothing, and an action that
arrives after its step's compensation (a flow the sweeper timed out) finds the tombstone and does nothing.

Every emission and delivery is a row of sagas.models.EventRecord in the database of the service that wrote
it, in that same transaction: the flow's trace, and what the sweeper reads to find a flow gone quiet.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from celery import shared_task
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from sagas.engine import PoisonMessage, message_problem
from sagas.models import EventRecord, StepGuard
from sagas.outbox import outbox_send
from sagas.participants import consume, message_claim
from shop.errors import BusinessError, TransientError
from shop.routers import service_alias
from shop.steps import Step

logger = logging.getLogger(__name__)

ACTION, COMPENSATION = "action", "compensation"
DONE, FAILED, UNDONE = "done", "failed", "undone"
SWEEPER = "sweeper"
# The Celery task of a service's reactions, on the service's own queue.
TASK_SUFFIX = "choreography"
# Transient failures of a compensation are retried until it succeeds, waiting at most this long between tries.
COMPENSATION_RETRY_CAP_SECONDS = 5.0


def event_task(service: str) -> str:
    return f"{service}.{TASK_SUFFIX}"


def default_event_names(step: Step) -> dict[str, str]:
    """StepName + Done/Failed/Undone, for a step whose flow names none of its own."""
    base = "".join(part.capitalize() for part in step.name.split("_"))
    return {DONE: f"{base}Done", FAILED: f"{base}Failed", UNDONE: f"{base}Undone"}


@dataclass(frozen=True)
class Reaction:
    """What one service does on hearing one event: run a step's action or compensation, then emit."""

    on: str
    service: str
    step: int
    direction: str
    emits_ok: str
    emits_failed: str | None  # actions only: the event of a failure that no retry mends


@dataclass(frozen=True)
class Choreography:
    name: str
    steps: tuple[Step, ...]
    # Event names by step name: {"reserve_stock": {"done": "StockReserved", ...}}; the others get defaults.
    event_names: dict[str, dict[str, str]] = field(default_factory=dict)
    timed_out: str = "TimedOut"
    # Whose is the sweeper's timed_out event: the service that keeps the flow's record (the order).
    home: str = "orders"

    def event(self, index: int, kind: str) -> str:
        step = self.steps[index]
        return {**default_event_names(step), **self.event_names.get(step.name, {})}[kind]

    def key(self, *, flow_id: str, index: int) -> str:
        """The step's effect key (and guard): one per flow instance and step."""
        return f"{self.name}:{flow_id}:{self.steps[index].name}"

    @property
    def first(self) -> int:
        """The last of the leading steps without an action: whoever starts the flow does them and emits its
        done event."""
        leading = 0
        while leading + 1 < len(self.steps) and self.steps[leading + 1].action is None:
            leading += 1
        if self.steps[0].action is not None:
            raise ValueError(f"choreography {self.name}: the first step is done by whoever starts the flow")
        return leading

    @cached_property
    def reactions(self) -> tuple[Reaction, ...]:
        # Derived once per process: every emission looks its subscribers up here.
        reactions: list[Reaction] = []
        for index in range(self.first + 1, len(self.steps)):
            step = self.steps[index]
            if step.action is None:
                raise ValueError(f"choreography {self.name}: step {step.name} has no action")
            reactions.append(Reaction(on=self.event(index - 1, DONE), service=step.service, step=index,
                                      direction=ACTION, emits_ok=self.event(index, DONE),
                                      emits_failed=self.event(index, FAILED)))
        compensable = [i for i, step in enumerate(self.steps) if step.compensation is not None]
        for position, index in enumerate(compensable):
            above = compensable[position + 1] if position + 1 < len(compensable) else len(self.steps)
            triggers = [self.event(failing, FAILED) for failing in range(index + 1, min(above + 1, len(self.steps)))
                        if failing > self.first]
            triggers.append(self.event(above, UNDONE) if above < len(self.steps) else self.timed_out)
            for trigger in triggers:
                reactions.append(Reaction(on=trigger, service=self.steps[index].service, step=index,
                                          direction=COMPENSATION, emits_ok=self.event(index, UNDONE),
                                          emits_failed=None))
        return tuple(reactions)

    def subscribers(self, event: str) -> list[Reaction]:
        return [reaction for reaction in self.reactions if reaction.on == event]

    def reacts_to(self, service: str) -> dict[str, list[Reaction]]:
        """What `service` listens for, and what it does on each event."""
        found: dict[str, list[Reaction]] = {}
        for reaction in self.reactions:
            if reaction.service == service:
                found.setdefault(reaction.on, []).append(reaction)
        return found

    def emits(self, service: str) -> set[str]:
        events = {e for r in self.reactions if r.service == service for e in (r.emits_ok, r.emits_failed) if e}
        if service == self.steps[0].service:
            events.add(self.event(self.first, DONE))
        return events

    def fenced_on_timeout(self) -> list[int]:
        """The steps above the last compensable one: nothing undoes them, so timing a flow out fences them."""
        last = max(i for i, step in enumerate(self.steps) if step.compensation is not None)
        return list(range(last + 1, len(self.steps)))

    def table(self) -> list[tuple[str, str, str, str]]:
        """(event, reacting service, what it runs, what it emits), for people."""
        return [(r.on, r.service, f"{self.steps[r.step].name} {r.direction}",
                 " | ".join(e for e in (r.emits_ok, r.emits_failed) if e)) for r in self.reactions]


_REGISTRY: dict[str, Choreography] = {}


def choreography_register(choreography: Choreography) -> Choreography:
    """Make `choreography` known by its name and give every service it names its reaction task."""
    _ = choreography.reactions  # refuses a malformed step list at import, not on the first event
    for service in {step.service for step in choreography.steps}:
        _service_task(service)
    _REGISTRY[choreography.name] = choreography
    return choreography


def get_choreography(name: str) -> Choreography:
    if name not in _REGISTRY:
        all_choreographies()
    return _REGISTRY[name]


def all_choreographies() -> list[Choreography]:
    # A flow's choreography registers on import of its app's `choreography` module.
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("choreography")
    return list(_REGISTRY.values())


_TASKS: set[str] = set()


def _service_task(service: str) -> None:
    name = event_task(service)
    if name in _TASKS:
        return
    _TASKS.add(name)

    @shared_task(name=name, acks_late=True)
    def task(message: dict) -> None:
        consume(consumer=service, task=name, queue=service, message=message,
                run=lambda m: handle_event(service=service, message=m))


# --- emitting -----------------------------------------------------------------------------------------------

def _record(*, using: str, choreography: Choreography, flow_id: str, event_id: str, event: str, service: str,
            consumer: str = "", at: datetime | None = None) -> None:
    """An emission, or a delivery (counted once more on every repeat), in the caller's transaction."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EventRecord._meta.db_table} (flow, flow_id, event_id, event, service, consumer, at, "
            "deliveries) VALUES (%s, %s, %s::uuid, %s, %s, %s, %s, %s) ON CONFLICT (event_id, consumer) "
            f"DO UPDATE SET deliveries = {EventRecord._meta.db_table}.deliveries + 1",
            [choreography.name, flow_id, event_id, event, service, consumer, at or timezone.now(),
             1 if consumer else 0])


def emit(*, choreography: Choreography, event: str, service: str, flow_id: str, data: dict,
         failure: dict | None = None, only: Reaction | None = None, attempt: int = 1,
         delay_seconds: float = 0.0) -> str:
    """Emit `event` from `service` in the caller's transaction on the service's database: its trace row and
    one outbox message per reacting service (`only`: just that one, a retry to itself). Returns its id."""
    using = service_alias(service)
    event_id = str(uuid.uuid4())
    emitted_at = timezone.now()
    if only is None:
        _record(using=using, choreography=choreography, flow_id=flow_id, event_id=event_id, event=event,
                service=service, at=emitted_at)
    for reaction in [only] if only is not None else choreography.subscribers(event):
        message_id = str(uuid.uuid4())
        outbox_send(using=using, queue=reaction.service, task=event_task(reaction.service), message_id=message_id,
                    delay_seconds=delay_seconds, payload={
                        "id": message_id, "event_id": event_id, "flow": choreography.name, "flow_id": flow_id,
                        "event": event, "service": service, "emitted_at": emitted_at.isoformat(),
                        "step": reaction.step, "direction": reaction.direction, "attempt": attempt,
                        "data": data, "failure": failure})
    return event_id


def choreography_start(*, choreography: Choreography, flow_id: str, data: dict) -> str:
    """In the caller's transaction (the one that did the leading steps): emit the first event."""
    return emit(choreography=choreography, event=choreography.event(choreography.first, DONE),
                service=choreography.steps[0].service, flow_id=flow_id, data=data)


# --- reacting -----------------------------------------------------------------------------------------------

EVENT_FIELDS = {"id": str, "event_id": str, "flow": str, "flow_id": str, "event": str, "service": str,
                "emitted_at": str, "step": int, "direction": str, "attempt": int, "data": dict}


def _reaction(service: str, message: dict) -> tuple[Choreography, Reaction]:
    problem = message_problem(message, EVENT_FIELDS, kind="event")
    if problem:
        raise PoisonMessage(problem)
    try:
        choreography = get_choreography(message["flow"])
    except KeyError as exc:
        raise PoisonMessage(f"unknown choreography {message['flow']!r}") from exc
    for reaction in choreography.subscribers(message["event"]):
        if (reaction.service, reaction.step, reaction.direction) == (service, message["step"], message["direction"]):
            return choreography, reaction
    raise PoisonMessage(f"{service} does not react to {message['event']} with step {message['step']} "
                        f"{message['direction']}")


def handle_event(*, service: str, message: dict) -> str:
    """React to one event exactly once in effect; returns what happened ("ok", "failed", "retry",
    "duplicate", "fenced")."""
    choreography, reaction = _reaction(service, message)
    step = choreography.steps[reaction.step]
    function = step.action if reaction.direction == ACTION else step.compensation
    assert function is not None  # reactions are derived from the functions steps have
    using = service_alias(service)
    flow_id = message["flow_id"]
    key = choreography.key(flow_id=flow_id, index=reaction.step)
    compensating = reaction.direction == COMPENSATION
    failure: BusinessError | TransientError | None = None

    def claim() -> tuple[bool, str, bool]:
        claimed, guard, fresh = message_claim(using=using, consumer=service, message_id=message["id"], key=key,
                                              compensating=compensating)
        _record(using=using, choreography=choreography, flow_id=flow_id, event_id=message["event_id"],
                event=message["event"], service=message["service"], consumer=service)
        return claimed, guard, fresh

    with transaction.atomic(using=using, durable=True):
        claimed, guard, fresh = claim()
        if not claimed:
            return "duplicate"
        if not compensating and guard == StepGuard.State.COMPENSATED:
            # The flow was undone (timed out) before this action arrived: acting now would undo the undo, and
            # the chain it would start has already been walked down.
            return "fenced"
        try:
            result = function(data=message["data"], key=key, failure=message.get("failure"), fresh=fresh)
        except (BusinessError, TransientError) as exc:
            failure = exc
            transaction.set_rollback(True, using=using)
        if failure is None:
            emit(choreography=choreography, event=reaction.emits_ok, service=service, flow_id=flow_id,
                 data={**message["data"], **(result or {})}, failure=message.get("failure"))
            return "ok"
    # The effect rolled back; in a transaction of its own: the message claimed, then a retry or the failure.
    with transaction.atomic(using=using, durable=True):
        claimed, _, _ = claim()
        if not claimed:
            return "duplicate"
        attempt = message["attempt"]
        if compensating or (isinstance(failure, TransientError) and step.retry.retries(failure.code)
                            and attempt < step.retry.attempts):
            # An undo must happen: a compensation is retried until it succeeds; an action while it may.
            delay = (min(COMPENSATION_RETRY_CAP_SECONDS, 0.1 * 2 ** min(attempt, 10)) if compensating
                     else step.retry.delay(attempt + 1))
            emit(choreography=choreography, event=message["event"], service=message["service"], flow_id=flow_id,
                 data=message["data"], failure=message.get("failure"), only=reaction, attempt=attempt + 1,
                 delay_seconds=delay)
            logger.warning("%s: %s of %s %s failed (%s), try %s in %.2f s", service, reaction.direction,
                           choreography.name, flow_id, failure, attempt + 1, delay)
            return "retry"
        code = failure.code if isinstance(failure, BusinessError) or not step.retry.retries(failure.code) \
            else step.retry.exhausted
        emit(choreography=choreography, event=reaction.emits_failed or "", service=service, flow_id=flow_id,
             data=message["data"], failure={"code": code, "detail": str(getattr(failure, "detail", failure))[:300],
                                            "step": step.name})
        return "failed"


# --- the sweeper's part -------------------------------------------------------------------------------------

def last_event_at(*, choreography: Choreography, flow_ids: list[str]) -> tuple[dict[str, datetime], set[str]]:
    """The time of the latest emission or first delivery of each flow, over every database; and the flows
    already timed out."""
    latest: dict[str, datetime] = {}
    timed_out: set[str] = set()
    for alias in settings.DATABASES:
        with connections[alias].cursor() as cursor:
            cursor.execute(f"SELECT flow_id, max(at), bool_or(event = %s AND consumer = '') "
                           f"FROM {EventRecord._meta.db_table} WHERE flow = %s AND flow_id = ANY(%s) GROUP BY flow_id",
                           [choreography.timed_out, choreography.name, flow_ids])
            for flow_id, at, was_timed_out in cursor.fetchall():
                if flow_id not in latest or at > latest[flow_id]:
                    latest[flow_id] = at
                if was_timed_out:
                    timed_out.add(flow_id)
    return latest, timed_out


FENCE_SQL = f"""
INSERT INTO {StepGuard._meta.db_table} (consumer, key, state, updated_at) VALUES (%s, %s, %s, now())
ON CONFLICT (consumer, key) DO UPDATE SET state = EXCLUDED.state, updated_at = now()
WHERE {StepGuard._meta.db_table}.state <> %s
RETURNING state
"""


def choreography_time_out(*, choreography: Choreography, flow_id: str, data: dict, quiet_seconds: float) -> bool:
    """Fail flow `flow_id`, gone quiet for `quiet_seconds`, by events: fence the steps nothing undoes (each
    in its service's database: their late action finds a tombstone), then emit `timed_out`, which starts the
    undo chain from the top; each compensation fences its own step as it runs. False when a fenced step had
    already acted (the flow finished meanwhile): nothing is done. `data`: the flow's data, as its first
    event carried it (what the compensations read)."""
    for index in choreography.fenced_on_timeout():
        step = choreography.steps[index]
        using = service_alias(step.service)
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute(FENCE_SQL, [step.service, choreography.key(flow_id=flow_id, index=index),
                                       StepGuard.State.COMPENSATED, StepGuard.State.ACTED])
            if cursor.fetchone() is None:
                return False
    with transaction.atomic(using=service_alias(choreography.home)):
        emit(choreography=choreography, event=choreography.timed_out, service=choreography.home, flow_id=flow_id,
             data=data, failure={
                 "code": "timed_out", "step": "",
                 "detail": f"no event for {quiet_seconds:.0f} s (CHOREOGRAPHY_DEADLINE_SECONDS)"})
    return True


def flows_quiet(*, choreography: Choreography, flow_ids: list[str], deadline: timedelta) -> dict[str, float]:
    """Of `flow_ids`, those with no event for longer than `deadline`: seconds since their last one.

    A flow timed out once is not timed out again: its undo chain is in outboxes and queues already, and each
    compensation retries itself until it succeeds; a second chain would only repeat it (harmlessly)."""
    now = timezone.now()
    latest, timed_out = last_event_at(choreography=choreography, flow_ids=flow_ids)
    return {flow_id: (now - at).total_seconds() for flow_id, at in latest.items()
            if now - at > deadline and flow_id not in timed_out}


def trace(*, choreography: Choreography, flow_id: str) -> list[dict]:
    """Every event of the flow in the order emitted: who emitted it, when, and who received it how often."""
    emissions: list[EventRecord] = []
    deliveries: dict[str, list[tuple[str, int]]] = {}
    for alias in settings.DATABASES:
        for record in EventRecord.objects.using(alias).filter(flow=choreography.name, flow_id=flow_id):
            if record.consumer:
                deliveries.setdefault(str(record.event_id), []).append((record.consumer, record.deliveries))
            else:
                emissions.append(record)
    emissions.sort(key=lambda record: (record.at, record.pk))
    return [{"event": record.event, "service": record.service, "at": record.at,
             "received_by": sorted(deliveries.get(str(record.event_id), [])),
             "deliveries": sum(count for _, count in deliveries.get(str(record.event_id), []))}
            for record in emissions]
