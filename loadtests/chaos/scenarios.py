"""The fault matrix: each scenario's processes, fault and own check, and the runner that wraps them.

A scenario runs on a freshly seeded database with freshly started processes: load starts, the fault
happens while the clients keep placing orders, the load goes on for a while after the fault ended, then the
clients finish what they started (retrying and polling, up to a bound after the fault ended). The verdict
then reads the clients' records, the database and `manage.py audit`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dj_database_url
import psycopg
import redis
import requests

from loadtests.chaos import verdict as checks
from loadtests.chaos.load import Load, Mix
from loadtests.chaos.servers import PrivateServers
from loadtests.chaos.stack import Stack
from loadtests.chaos.verdict import Verdict
from runtime.launcher import REPO_ROOT, process_commands
from sagas.processes import COMMAND_QUEUES, QUEUES, REPLY_QUEUES, relay_command, sweeper_command, worker_command

PYTHON = sys.executable
HOST = "127.0.0.1"
# The smallest visibility timeout the settings accept: a message a SIGKILLed worker held comes back after it.
VISIBILITY_TIMEOUT_SECONDS = 60
SAGA_TABLES = ("sagas_sagasteplog", "sagas_sagainstance", "sagas_outboxmessage", "sagas_inboxmessage",
               "sagas_stepguard", "sagas_deadletter")
TASK_LINE = re.compile(r"Task (?P<task>[\w.]+)\[(?P<id>[0-9a-f-]{36})\] (?P<event>received|succeeded|raised|retry|"
                       r"failed)")


def say(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


@dataclass(frozen=True)
class Pace:
    """How much load and how long: the full matrix, or the short one for CI."""

    clients: int
    warmup_seconds: float
    fault_seconds: float  # how long a timed fault (an outage, a freeze) lasts, at least
    after_seconds: float  # load after the fault ended
    bound_seconds: float  # every order final this long after the fault ended
    think: tuple[float, float] = (0.2, 0.6)

    @classmethod
    def full(cls) -> Pace:
        return cls(clients=4, warmup_seconds=8, fault_seconds=20, after_seconds=10, bound_seconds=60)

    @classmethod
    def short(cls) -> Pace:
        return cls(clients=3, warmup_seconds=3, fault_seconds=8, after_seconds=3, bound_seconds=45)


# -- the database, read directly ----------------------------------------------------------------------------


class Database:
    """Plain SQL on the chaos database, retried while PostgreSQL comes back."""

    def __init__(self, url: str) -> None:
        config = dj_database_url.parse(url)
        self.params = {"host": config["HOST"] or None, "port": config["PORT"] or None,
                       "user": config["USER"] or None, "dbname": config["NAME"]}

    def rows(self, sql: str, params: tuple | list = (), *, wait: float = 30) -> list[tuple]:
        deadline = time.monotonic() + wait
        while True:
            try:
                with psycopg.connect(**self.params, autocommit=True, connect_timeout=5) as conn:
                    cursor = conn.execute(sql, params)
                    return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def has_table(self, name: str) -> bool:
        return self.rows("SELECT to_regclass(%s) IS NOT NULL", [name])[0][0]

    def statuses(self) -> dict[int, str]:
        return dict(self.rows("SELECT id, status FROM orders_order"))

    def pending(self) -> list[int]:
        return [r[0] for r in self.rows("SELECT id FROM orders_order WHERE status = 'PENDING' ORDER BY id")]

    def outbox(self) -> tuple[int, int]:
        """(unpublished messages, messages published more than once)."""
        return self.rows("SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FILTER (WHERE "
                         "publish_count > 1) FROM sagas_outboxmessage")[0]

    def steps_of_commands(self, command_ids: list[str]) -> list[tuple[str, str, str, str]]:
        """(message id, step, direction, outcome) logged for these command ids, in order."""
        return self.rows("SELECT message_id::text, step_name, direction, outcome FROM sagas_sagasteplog "
                         "WHERE message_id::text = ANY(%s) ORDER BY id", [command_ids])

    def order_of_command(self, command_id: str) -> int | None:
        found = self.rows("SELECT (s.data->>'order_id')::bigint FROM sagas_sagasteplog l JOIN sagas_sagainstance s "
                          "ON s.id = l.saga_id WHERE l.message_id::text = %s LIMIT 1", [command_id])
        return found[0][0] if found else None

    def order_effects(self, order_id: int) -> str:
        order = self.rows("SELECT status, failure_reason FROM orders_order WHERE id = %s", [order_id])
        payment = self.rows("SELECT status FROM payments_payment WHERE order_id = %s", [order_id])
        held = self.rows("SELECT status FROM inventory_reservation WHERE order_id = %s", [order_id])
        status = f"{order[0][0]} ({order[0][1]})" if order and order[0][1] else (order[0][0] if order else "no order")
        return (f"order {order_id} {status}, payment {payment[0][0] if payment else 'none'}, "
                f"reservation {held[0][0] if held else 'none'}")


# -- one scenario -------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a scenario's fault and check can use."""

    name: str
    pace: Pace
    servers: PrivateServers
    stack: Stack
    db: Database
    base_url: str
    load: Load | None = None
    fault_started: float = 0.0
    fault_ended: float = 0.0
    seen: dict[str, Any] = field(default_factory=dict)

    def web(self, port: int, workers: int = 3) -> None:
        argv = process_commands(HOST, port, flow="atomic")["web"]
        argv[argv.index("--workers") + 1] = str(workers)
        argv.append("--preload")  # Django is imported once, before the fork: a faster start on 2 cores
        self.stack.start("web", argv)

    def worker(self, name: str, queues: tuple[str, ...] = QUEUES, concurrency: int = 3, **env: str) -> None:
        argv = worker_command(PYTHON, queues, name, concurrency)
        argv[argv.index("--loglevel") + 1] = "INFO"  # the "received" / "succeeded" lines show redelivery
        self.stack.start(name, argv, **env)

    def relay(self, name: str = "relay", **env: str) -> None:
        self.stack.start(name, relay_command(PYTHON, "default"), **env)

    def sweeper(self) -> None:
        self.stack.start("sweeper", sweeper_command(PYTHON))

    def saga_processes(self, port: int, services: tuple[str, ...] = COMMAND_QUEUES) -> None:
        """The shop's default layout (sagas.processes): the orchestrator's replies on a worker of their own,
        the services' commands on another, a relay, the sweeper. A scenario may take queues out of
        `services` to give them a worker it can kill or freeze."""
        self.web(port)
        self.worker("replies", REPLY_QUEUES, concurrency=2)
        self.worker("services", services, concurrency=2)
        self.relay()
        self.sweeper()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def tasks_in_log(self, name: str, start: int | None = None) -> dict[str, list[tuple[str, str]]]:
        """task id -> [(task, event), ...] from the worker's logs (one start, or all of them)."""
        log_dir = self.stack.log_dir
        paths = [log_dir / f"{name}.{start}.log"] if start else sorted(log_dir.glob(f"{name}.*.log"))
        events: dict[str, list[tuple[str, str]]] = {}
        for path in paths:
            if path.exists():
                for match in TASK_LINE.finditer(path.read_text(errors="replace")):
                    events.setdefault(match["id"], []).append((match["task"], match["event"]))
        return events

    def in_flight(self, name: str, start: int, task_prefix: str = "") -> dict[str, str]:
        """Messages this start of the worker received and did not finish: task id -> task."""
        found = {}
        for task_id, events in self.tasks_in_log(name, start).items():
            kinds = {event for _, event in events}
            if "received" in kinds and not kinds & {"succeeded", "raised", "failed"} \
                    and events[0][0].startswith(task_prefix):
                found[task_id] = events[0][0]
        return found

    def wait_in_flight(self, name: str, task_prefix: str, timeout: float = 15) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.in_flight(name, self.stack.children[name].starts, task_prefix)
            if found:
                return found
            time.sleep(0.05)
        return {}


@dataclass
class Scenario:
    name: str
    mode: str
    what: str
    fault: Callable[[Context], None]
    check: Callable[[Context, Verdict], None] = lambda ctx, verdict: None
    processes: Callable[[Context, int], None] = Context.saga_processes
    env: dict[str, str] = field(default_factory=dict)
    mix: Callable[[], Mix] = Mix.default
    bound_extra: float = 0.0  # added to the pace's bound (a fault whose recovery takes longer by design)
    allowed_failures: tuple[str, ...] = ()  # failure reasons the fault itself may rightly cause


# -- worker-sigkill -----------------------------------------------------------------------------------------


def restore_unacked(redis_url: str) -> None:
    """What every Celery worker does periodically (and at start): put back the messages unacknowledged for
    longer than the visibility timeout. Done here so the redelivery is seen within the run instead of at
    the next periodic sweep of a worker (up to ~100 s later with kombu's defaults)."""
    from kombu import Connection

    with Connection(redis_url, transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS}) as conn:
        conn.default_channel.qos.restore_visible(num=10_000)


# Slow enough that a charge is usually in progress, fast enough that the worker keeps up with the load.
SLOW_GATEWAY_MS = "300"


def worker_sigkill_processes(ctx: Context, port: int) -> None:
    ctx.saga_processes(port, tuple(q for q in COMMAND_QUEUES if q != "payments"))
    # A slow gateway keeps charges in progress, so the kill lands inside one.
    ctx.worker("payments", ("payments",), concurrency=2, PAYMENT_LATENCY_MS=SLOW_GATEWAY_MS)


def worker_sigkill(ctx: Context) -> None:
    in_flight = ctx.wait_in_flight("payments", "payments.")
    ctx.stack.kill("payments")
    killed_at = time.monotonic()
    # Read again after the kill: the log is complete now.
    in_flight = ctx.in_flight("payments", ctx.stack.children["payments"].starts, "payments.") or in_flight
    ctx.seen["in_flight"] = in_flight
    ctx.worker("payments", ("payments",), concurrency=2, PAYMENT_LATENCY_MS=SLOW_GATEWAY_MS)
    say(f"  SIGKILLed the payments worker with {len(in_flight)} message(s) unacknowledged; restarted it; "
        f"waiting {VISIBILITY_TIMEOUT_SECONDS}s for the broker to redeliver them")
    ctx.fault_ended = time.monotonic()
    ctx.sleep(max(0.0, killed_at + VISIBILITY_TIMEOUT_SECONDS + 1 - time.monotonic()))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        restore_unacked(ctx.servers.redis_url)
        later = {task_id for start in range(2, ctx.stack.children["payments"].starts + 1)
                 for task_id, events in ctx.tasks_in_log("payments", start).items()
                 if any(event == "received" for _, event in events)}
        if set(in_flight) <= later:
            break
        ctx.sleep(2)


def worker_sigkill_check(ctx: Context, verdict: Verdict) -> None:
    in_flight: dict[str, str] = ctx.seen.get("in_flight", {})
    if not in_flight:
        verdict.check("the kill found no payments message in progress (no redelivery to watch)")
        return
    later: dict[str, list[str]] = {}
    for start in range(2, ctx.stack.children["payments"].starts + 1):
        for task_id, events in ctx.tasks_in_log("payments", start).items():
            later.setdefault(task_id, []).extend(event for _, event in events)
    redelivered = [i for i in in_flight if "received" in later.get(i, [])]
    steps = ctx.db.steps_of_commands(list(in_flight))
    resent = {mid for mid, _, _, outcome in steps if outcome == "resent"}
    answered = {mid for mid, _, _, outcome in steps if outcome in ("ok", "business", "transient")}
    verdict.note(f"{len(in_flight)} payments message(s) unacknowledged at the SIGKILL: "
                 f"{', '.join(f'{t}[{i[:8]}]' for i, t in in_flight.items())}; received again after the restart "
                 f"(broker redelivery, acks_late): {len(redelivered)}; re-sent by the sweeper: {len(resent)}; "
                 f"answered in the step log: {len(answered)}")
    missing = [i[:8] for i in in_flight if i not in redelivered]
    if missing:
        verdict.check(f"{len(missing)} of {len(in_flight)} message(s) held by the killed worker were not redelivered "
                      f"by the broker within {VISIBILITY_TIMEOUT_SECONDS + 40}s: {', '.join(missing)}")
    if resent:
        verdict.check(f"{len(resent)} killed step(s) were re-sent by the sweeper instead of redelivered")
    unanswered = [i[:8] for i in in_flight if i not in answered and in_flight[i] == "payments.charge"]
    if unanswered:
        verdict.check(f"{len(unanswered)} killed charge(s) never got an answer in the step log: "
                      f"{', '.join(unanswered)}")


# -- relay-sigkill, two-relays ------------------------------------------------------------------------------


def relay_sigkill(ctx: Context) -> None:
    rounds = 3
    for _ in range(rounds):
        ctx.stack.kill("relay")
        ctx.sleep(1.5)  # orders keep committing their first command to the outbox meanwhile
        ctx.relay()
        ctx.sleep(2)
    # Then the worst moment: dead after publishing a batch and before committing it.
    ctx.stack.kill("relay")
    ctx.relay("relay-crashing", OUTBOX_RELAY_FAULT="crash-after-publish")
    ctx.stack.expect_exit("relay-crashing")
    proc = ctx.stack.children["relay-crashing"].proc
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        ctx.sleep(0.1)
    ctx.seen["crash_exit"] = proc.poll()
    ctx.stack.stop("relay-crashing")
    ctx.relay()
    ctx.seen["kills"] = rounds
    say(f"  SIGKILLed the relay {rounds} times under load, then ran one that died after publishing "
        f"(exit {ctx.seen['crash_exit']})")


def outbox_check(ctx: Context, verdict: Verdict) -> None:
    pending, marked_twice = ctx.db.outbox()
    verdict.note(f"outbox: {pending} unpublished at the end, {marked_twice} row(s) marked published twice")
    if pending:
        verdict.check(f"{pending} outbox message(s) still unpublished at the end")
    if marked_twice:
        verdict.check(f"{marked_twice} outbox row(s) were claimed and marked published by more than one relay")


def delivered_twice(ctx: Context, workers: tuple[str, ...] = ("replies", "services")) -> dict[str, int]:
    """Message id -> deliveries, for messages the workers received more than once."""
    counts: dict[str, int] = {}
    for name in workers:
        for task_id, events in ctx.tasks_in_log(name).items():
            counts[task_id] = counts.get(task_id, 0) + sum(1 for _, event in events if event == "received")
    return {task_id: n for task_id, n in counts.items() if n > 1}


def relay_sigkill_check(ctx: Context, verdict: Verdict) -> None:
    if ctx.seen.get("crash_exit") != 17:
        verdict.check(f"the relay with OUTBOX_RELAY_FAULT=crash-after-publish did not crash as injected "
                      f"(exit {ctx.seen.get('crash_exit')})")
    outbox_check(ctx, verdict)
    twice = delivered_twice(ctx)
    verdict.note(f"{len(twice)} message(s) delivered more than once (published by a relay that died before its "
                 f"commit, then again by the next one), each handled once by its inbox (audit)")
    if ctx.seen.get("crash_exit") == 17 and not twice:
        verdict.check("no message was delivered twice, although a relay died after publishing its batch")


def two_relays_processes(ctx: Context, port: int) -> None:
    ctx.saga_processes(port)
    ctx.relay("relay-second")


def two_relays(ctx: Context) -> None:
    say(f"  two relays publishing the same outbox for {ctx.pace.fault_seconds:.0f}s")
    ctx.sleep(ctx.pace.fault_seconds)


def two_relays_check(ctx: Context, verdict: Verdict) -> None:
    for name in ("relay", "relay-second"):
        if not ctx.stack.running(name):
            verdict.check(f"{name} was not running at the end")
    outbox_check(ctx, verdict)
    # With no crash, a message reaches a worker twice only if both relays published it (or the sweeper re-sent it).
    resent = {row[0] for row in ctx.db.rows("SELECT message_id::text FROM sagas_sagasteplog WHERE outcome = 'resent'")}
    twice = {task_id: n for task_id, n in delivered_twice(ctx).items() if task_id not in resent}
    verdict.note(f"{len(twice)} message(s) delivered more than once ({len(resent)} re-sent by the sweeper, "
                 f"not counted)")
    if twice:
        verdict.check(f"{len(twice)} message(s) were delivered twice with both relays up: "
                      + ", ".join(f"{i[:8]} x{n}" for i, n in list(twice.items())[:5]))


# -- redis-restart, broker-outage, postgres-restart ---------------------------------------------------------


def redis_restart(ctx: Context) -> None:
    ctx.servers.stop_redis()
    ctx.sleep(2)
    ctx.servers.start_redis()
    say("  restarted Redis (the broker) under load: down about 2s")


def broker_outage(ctx: Context) -> None:
    timeout = float(ctx.stack.env["SAGA_STEP_TIMEOUT_SECONDS"])
    resends = int(ctx.stack.env["SAGA_MAX_RESENDS"])
    outage = max(ctx.pace.fault_seconds, timeout * (resends + 1) + 4)
    ctx.servers.stop_redis()
    ctx.sleep(outage)
    ctx.servers.start_redis()
    ctx.seen["outage"] = outage
    say(f"  the broker was down {outage:.0f}s; a step unanswered for {timeout:.0f}s is re-sent, and given up "
        f"after {resends} re-sends")


def failed_steps_note(ctx: Context, verdict: Verdict) -> None:
    unavailable_note(ctx, verdict)
    steps = ctx.db.rows("SELECT failure->>'step', count(*) FROM sagas_sagainstance WHERE state = 'COMPENSATED' "
                        "AND failure->>'code' = 'step_timeout' GROUP BY 1 ORDER BY 2 DESC")
    if steps:
        verdict.note("sagas given up for silence, by step: " + ", ".join(f"{n} at {step}" for step, n in steps))


def postgres_restart(ctx: Context) -> None:
    ctx.servers.stop_postgres()
    ctx.sleep(3)
    ctx.servers.start_postgres()
    say("  restarted PostgreSQL (fast shutdown) under load: down about 3s")


def unavailable_note(ctx: Context, verdict: Verdict) -> None:
    if ctx.load is not None:
        http = ctx.load.http
        verdict.note(f"during the load: {http.count(503)} answer(s) 503, {http.count(500)} answer(s) 500, "
                     f"{http.connection_errors} connection error(s)")


def web_only(ctx: Context, port: int) -> None:
    ctx.web(port)


# -- participant-late ---------------------------------------------------------------------------------------


def participant_late_processes(ctx: Context, port: int) -> None:
    ctx.saga_processes(port, tuple(q for q in COMMAND_QUEUES if q not in ("inventory", "payments")))
    # One participant worker for stock and money, one task at a time, with a slow gateway: frozen, it holds
    # a step's action inside its open transaction.
    ctx.worker("participant", ("inventory", "payments"), concurrency=1, PAYMENT_LATENCY_MS="100")


def participant_late(ctx: Context) -> None:
    timeout = float(ctx.stack.env["SAGA_STEP_TIMEOUT_SECONDS"])
    resends = int(ctx.stack.env["SAGA_MAX_RESENDS"])
    frozen_for = max(ctx.pace.fault_seconds * 0.75, timeout * (resends + 1) + 4)
    held = ctx.wait_in_flight("participant", "payments.charge")
    ctx.stack.freeze("participant")
    held = ctx.in_flight("participant", ctx.stack.children["participant"].starts) or held
    ctx.seen["held"] = held
    # Another worker takes the queues meanwhile: re-sends and compensations run while the action is held.
    ctx.worker("participant-standby", ("inventory", "payments"), concurrency=4)
    say(f"  froze the participant worker (SIGSTOP) holding {', '.join(f'{t}[{i[:8]}]' for i, t in held.items())} "
        f"for {frozen_for:.0f}s (step deadline {timeout:.0f}s, given up after {resends} re-sends); then SIGCONT")
    ctx.sleep(frozen_for)
    ctx.stack.thaw("participant")


def participant_late_check(ctx: Context, verdict: Verdict) -> None:
    held: dict[str, str] = ctx.seen.get("held", {})
    if not held:
        verdict.check("the freeze found no step in progress in the participant worker (the race was not set up)")
        return
    for command_id, task in held.items():
        order_id = ctx.db.order_of_command(command_id)
        steps = ctx.db.steps_of_commands([command_id])
        verdict.note(f"held {task}[{command_id[:8]}]: "
                     + (ctx.db.order_effects(order_id) if order_id else "no saga logged it")
                     + f"; its step log: {', '.join(f'{d} {o}' for _, _, d, o in steps) or 'empty'}")
    timed_out = sum(1 for r in (ctx.load.records if ctx.load else []) if r.failure_reason == "step_timeout")
    late = ctx.db.rows("SELECT count(*) FILTER (WHERE outcome = 'compensated'), count(*) FILTER (WHERE "
                       "outcome = 'stale') FROM sagas_sagasteplog")[0]
    verdict.note(f"{timed_out} order(s) FAILED with step_timeout; step log: {late[0]} action(s) skipped as "
                 f"already compensated, {late[1]} late repl(ies) recorded")
    if not timed_out:
        verdict.note("no saga gave a step up, so no compensation raced its action")


# -- poison-message -----------------------------------------------------------------------------------------


def poison_messages() -> list[tuple[str, str, str, Any]]:
    """(kind, queue, task, argument) of messages no consumer can handle; each carries its own task id (the
    `{task_id}` placeholder) so its dead letter can be found whatever the consumer could read of it."""
    def reply(saga: str) -> dict:
        return {"id": "{task_id}", "saga": saga, "saga_id": str(uuid.uuid4()), "command_id": str(uuid.uuid4()),
                "step": 0, "step_name": "reserve_stock", "direction": "action", "attempt": 1, "outcome": "ok",
                "result": {}}

    return [
        ("unparseable reply", "sagas", "sagas.reply", "chaos poison {task_id}: this is not a reply"),
        ("reply naming an unknown saga type", "sagas", "sagas.reply", reply("no-such-saga")),
        ("reply naming an unknown saga", "sagas", "sagas.reply", reply("order")),
        ("unparseable command", "payments", "payments.charge", {"chaos_poison": "{task_id}", "no": "fields"}),
    ]


def poison_message(ctx: Context) -> None:
    from celery import Celery

    app = Celery("chaos-poison", broker=ctx.servers.redis_url, set_as_current=False)
    sent = {}
    try:
        for kind, queue, task, argument in poison_messages():
            task_id = str(uuid.uuid4())
            argument = json.loads(json.dumps(argument).replace("{task_id}", task_id))
            app.send_task(task, args=[argument], queue=queue, task_id=task_id)
            sent[task_id] = kind
    finally:
        app.close()
    ctx.seen["poison"] = sent
    say(f"  sent {len(sent)} poison message(s) straight to the queues: {', '.join(sent.values())}")
    ctx.fault_ended = time.monotonic()
    # Waits here (the load goes on) until they are dead-lettered, so the check reads a settled table.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if ctx.db.has_table("sagas_deadletter") and len(dead_letters(ctx, sent)) == len(sent):
            break
        ctx.sleep(1)


def dead_letters(ctx: Context, sent: dict[str, str]) -> dict[str, str]:
    """Poison task id -> the dead letter's error, for those found in sagas_deadletter."""
    found = {}
    for message_id, payload, error in ctx.db.rows("SELECT message_id, payload::text, error FROM sagas_deadletter"):
        for task_id in sent:
            if message_id == task_id or (payload and task_id in payload):
                found[task_id] = error
    return found


def poison_message_check(ctx: Context, verdict: Verdict) -> None:
    sent: dict[str, str] = ctx.seen.get("poison", {})
    if not ctx.db.has_table("sagas_deadletter"):
        verdict.check("there is no sagas_deadletter table")
        return
    found = dead_letters(ctx, sent)
    verdict.note(f"dead letters: {len(found)} of the {len(sent)} poison message(s)"
                 + "".join(f"; {sent[t]}: {e[:80]!r}" for t, e in found.items()))
    missing = [kind for task_id, kind in sent.items() if task_id not in found]
    if missing:
        verdict.check(f"{len(missing)} poison message(s) not in sagas_deadletter within 40s: {', '.join(missing)}")
    after = [r for r in (ctx.load.placed_since(ctx.fault_ended) if ctx.load else [])
             if r.outcome in ("CONFIRMED", "FAILED")]
    verdict.note(f"{len(after)} order(s) placed after the poison reached a final state")
    if not after:
        verdict.check("no order placed after the poison messages reached a final state")


# -- the matrix ---------------------------------------------------------------------------------------------


SCENARIOS = [
    Scenario("worker-sigkill", "saga",
             "the payments worker SIGKILLed inside a charge, restarted at once; the broker redelivers what it held",
             worker_sigkill, worker_sigkill_check, worker_sigkill_processes,
             # The sweeper stays out of the way, so a killed step can only finish by the broker's redelivery.
             env={"SAGA_STEP_TIMEOUT_SECONDS": "150"}, bound_extra=VISIBILITY_TIMEOUT_SECONDS + 40),
    Scenario("relay-sigkill", "saga", "the outbox relay SIGKILLed 3 times and crashing after a publish",
             relay_sigkill, relay_sigkill_check),
    Scenario("two-relays", "saga", "two relays publishing the same outbox", two_relays, two_relays_check,
             two_relays_processes),
    Scenario("redis-restart", "saga", "Redis (broker) restarted mid-load", redis_restart, unavailable_note,
             env={"SAGA_STEP_TIMEOUT_SECONDS": "10"}),
    Scenario("postgres-restart-atomic", "atomic", "PostgreSQL restarted mid-load, atomic flow", postgres_restart,
             unavailable_note, web_only),
    Scenario("postgres-restart-saga", "saga", "PostgreSQL restarted mid-load, saga flow", postgres_restart,
             unavailable_note, env={"SAGA_STEP_TIMEOUT_SECONDS": "10"}),
    Scenario("participant-late", "saga",
             "the stock and payments worker frozen inside a step past its deadline, then resumed",
             participant_late, participant_late_check, participant_late_processes,
             env={"SAGA_STEP_TIMEOUT_SECONDS": "2", "SAGA_MAX_RESENDS": "1", "SAGA_SWEEP_INTERVAL_SECONDS": "0.3"},
             allowed_failures=("step_timeout",)),
    Scenario("poison-message", "saga", "unparseable messages and unknown sagas sent straight to the queues",
             poison_message, poison_message_check),
    Scenario("broker-outage", "saga", "the broker down longer than a step deadline and all its re-sends",
             broker_outage, failed_steps_note, env={"SAGA_STEP_TIMEOUT_SECONDS": "3", "SAGA_MAX_RESENDS": "2"},
             mix=Mix.all_good),
]


# -- the runner -----------------------------------------------------------------------------------------------


@dataclass
class Run:
    servers: PrivateServers
    pace: Pace
    out: Path
    customers: int = 4

    def env(self, scenario: Scenario) -> dict[str, str]:
        import os

        from shop.env import SERVICES

        env = {**os.environ, "ORDER_FLOW": scenario.mode, "DATABASE_URL": self.servers.database_url,
               "REDIS_URL": self.servers.redis_url, "PYTHONUNBUFFERED": "1",
               "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_SECONDS),
               "SAGA_SWEEP_INTERVAL_SECONDS": "0.5", "SHOP_DATA_DIR": str(self.servers.data_dir)}
        # Nothing may point a process at another server than the private ones.
        for name in ("CELERY_BROKER_URL", "SHOP_DB_PER_SERVICE", "OUTBOX_RELAY_FAULT", "API_THROTTLE_RATE",
                     *(f"{s.upper()}_DATABASE_URL" for s in SERVICES)):
            env.pop(name, None)
        env.update(scenario.env)
        return env

    def manage(self, env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "manage.py", *args], cwd=REPO_ROOT, env=env, text=True, capture_output=True,
                              timeout=timeout)

    def migrate(self) -> None:
        done = self.manage(self.env(SCENARIOS[0]), "migrate", "--noinput", "-v", "0", timeout=300)
        if done.returncode:
            raise RuntimeError(f"migrate failed: {done.stderr.strip()[-1500:]}")

    def reset_broker(self) -> None:
        """No message of an earlier scenario may reach this one's processes."""
        redis.Redis.from_url(self.servers.redis_url).flushdb()

    def seed(self, env: dict[str, str], db: Database) -> None:
        """The same data for every scenario: the seeded customers and products, no order, no saga."""
        done = self.manage(env, "seed", "--customers", str(self.customers), "--products", "10", "--stock", "5000",
                           "--balance-cents", "100000000")
        if done.returncode:
            raise RuntimeError(f"seed failed: {done.stderr.strip()[-1500:]}")
        # `seed` may not reset the saga engine's tables yet; they are the chaos database's own, so empty them.
        present = [t for t in SAGA_TABLES if db.has_table(t)]
        if present:
            db.rows(f"TRUNCATE {', '.join(present)}")

    def audit(self, env: dict[str, str]) -> tuple[int | None, list[str]]:
        try:
            done = self.manage(env, "audit", timeout=120)
        except subprocess.TimeoutExpired:
            return None, []
        return done.returncode, done.stdout.splitlines() + done.stderr.strip().splitlines()[-2:]

    def scenario(self, scenario: Scenario) -> Verdict:
        verdict = Verdict(scenario.name)
        env = self.env(scenario)
        db = Database(self.servers.database_url)
        started = time.monotonic()
        say(f"{scenario.name}: {scenario.what} ({scenario.mode} flow)")
        self.reset_broker()
        stack = Stack(env, self.out / scenario.name)
        port = _free_port()
        ctx = Context(scenario.name, self.pace, self.servers, stack, db, f"http://{HOST}:{port}")
        phases: list[str] = []

        def phase(name: str, since: list[float] = [started]) -> None:  # noqa: B006 (the running clock)
            now = time.monotonic()
            phases.append(f"{name} {now - since[0]:.0f}s")
            since[0] = now

        try:
            # The processes boot while the data is seeded: nothing reaches them before the load starts.
            scenario.processes(ctx, port)
            self.seed(env, db)
            _wait_ready(ctx.base_url, stack)
            phase("seed+start")
            bound = self.pace.bound_seconds + scenario.bound_extra
            load = Load(ctx.base_url, clients=self.pace.clients, mix=scenario.mix(), think=self.pace.think)
            ctx.load = load
            load.start()
            _wait_warm(load, self.pace.warmup_seconds)
            ctx.fault_started = time.monotonic()
            scenario.fault(ctx)
            ctx.fault_ended = ctx.fault_ended or time.monotonic()
            ctx.sleep(max(0.0, ctx.fault_ended + self.pace.after_seconds - time.monotonic()))
            load.stop(give_up_at=ctx.fault_ended + bound)
            load.join()
            phase("load")
            self._verdict(ctx, scenario, verdict, env, bound)
            phase("checks")
        except Exception as exc:  # a driver failure is reported as this scenario's verdict, not a crash of the run
            verdict.check(f"the driver could not finish the scenario: {type(exc).__name__}: {exc}")
        finally:
            if ctx.load is not None:
                ctx.load.stop(give_up_at=time.monotonic())
            stack.close()
            phase("stop")
        for note in verdict.notes:
            say(f"  {note}")
        say(f"{verdict.line()}  [{time.monotonic() - started:.0f}s: {', '.join(phases)}]")
        return verdict

    def _verdict(self, ctx: Context, scenario: Scenario, verdict: Verdict, env: dict[str, str], bound: float) -> None:
        load = ctx.load
        assert load is not None
        records = load.records
        verdict.note(checks.load_summary(records))
        if load.login_errors:
            verdict.check(f"clients could not log in: {'; '.join(load.login_errors[:3])}")
        verdict.check(checks.check_placed(records))
        in_use = checks.key_in_use_note(records)
        if in_use:
            verdict.note(in_use)
        hit = checks.in_flight_during(records, ctx.fault_started, ctx.fault_ended)
        verdict.note(f"{len(hit)} order(s) in flight while the fault lasted "
                     f"({ctx.fault_ended - ctx.fault_started:.0f}s)")
        verdict.check(checks.check_fault_met_orders(records, ctx.fault_started, ctx.fault_ended))
        verdict.check(checks.check_final_in_time(records, bound))
        verdict.check(checks.check_database_final(ctx.db.pending()))
        verdict.check(checks.check_api_matches_database(records, ctx.db.statuses()))
        verdict.check(checks.check_no_server_errors(load.http))
        verdict.check(checks.check_retry_after(load.http))
        verdict.check(checks.check_expected_outcomes(records, scenario.allowed_failures))
        if scenario.mode == "saga":
            verdict.check(checks.check_saga_answers(records))
        scenario.check(ctx, verdict)
        verdict.check(checks.check_processes(ctx.stack.exits_summary()))
        returncode, lines = self.audit(env)
        verdict.note("audit: " + " | ".join(" ".join(line.split()) for line in lines if line.strip()))
        verdict.check(checks.check_audit(returncode, lines))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_ready(base_url: str, stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/api/v1/products", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the web did not answer within {timeout:.0f}s; see {stack.log_dir}")


def _wait_warm(load: Load, seconds: float) -> None:
    """The warm-up: `seconds`, and at least a few orders through, so the fault meets a working shop."""
    started = time.monotonic()
    while time.monotonic() - started < max(seconds, 30):
        done = sum(1 for r in load.records if r.final)
        if time.monotonic() - started >= seconds and done >= load.clients:
            return
        time.sleep(0.2)
