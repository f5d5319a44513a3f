"""The orchestrator: starts sagas, advances them on replies, and sweeps the ones whose step went silent.

Every decision is one cell of `TABLE`: (saga state, event) -> (next state, effect). `handle_reply`,
`sweep` and `saga_retry` only turn what happened into an event (`classify_reply`, `classify_timeout`)
and hand it to `apply`, which looks the pair up and refuses any pair the table does not have. Every move
happens in one transaction of the orchestrator's database: lock the saga row, record what arrived in the
step log, change the saga's state, and write the next command to the outbox. A crash anywhere leaves
either the old state with the reply still to be (re)delivered, or the new state with its command in the
outbox.

    python -m sagas.engine      # prints the table
"""

from __future__ import annotations

import enum
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from sagas.definitions import SagaDefinition, Step, command_task, get_definition, register
from sagas.models import OutboxMessage, SagaInstance, SagaStepLog
from sagas.outbox import outbox_insert_sql
from shop.db import fetch, is_conflict, model_columns, model_from_row
from shop.errors import BusinessError, TransientError, broker_unavailable_errors, database_unavailable_errors
from shop.routers import service_alias

logger = logging.getLogger(__name__)

REPLY_QUEUE = "sagas"
REPLY_TASK = "sagas.reply"
ORCHESTRATOR = "orchestrator"

State = SagaInstance.State
Direction = SagaStepLog.Direction
Outcome = SagaStepLog.Outcome

__all__ = ["TABLE", "Effect", "Event", "PoisonMessage", "apply", "build_reply", "classify_reply",
           "classify_timeout", "handle_reply", "message_problem", "register", "saga_retry", "saga_start", "sweep"]


class PoisonMessage(ValueError):
    """A message no delivery can ever handle (malformed, or naming a saga that does not exist)."""


class Event(enum.StrEnum):
    ACTION_OK = "action ok"
    ACTION_BUSINESS = "action business failure"
    ACTION_TRANSIENT = "action transient failure, retries left"
    ACTION_EXHAUSTED = "action transient failure, no retry left"
    ALL_STEPS_DONE = "no step left"
    COMPENSATION_OK = "compensation ok"
    COMPENSATION_FAILED = "compensation failed, attempts left"
    COMPENSATION_EXHAUSTED = "compensation failed, no attempt left"
    NOTHING_TO_COMPENSATE = "no compensation left"
    DEADLINE = "no reply by the step deadline"
    DEADLINE_EXHAUSTED = "no reply after every re-send (outcome unknown)"
    STALE_REPLY = "reply to a command the saga no longer awaits"
    ADMIN_RETRY = "admin retry"
    POISON = "poison message"


class Effect(enum.StrEnum):
    SEND_NEXT_ACTION = "send the next action"
    RETRY_ACTION = "send the action again after a backoff (new attempt)"
    RESEND = "re-send the same command (same message id), later each time"
    COMPENSATE_COMPLETED = "compensate the completed steps, newest first"
    COMPENSATE_CURRENT = "compensate the current step too (its outcome is unknown), then the completed ones"
    SEND_NEXT_COMPENSATION = "send the compensation of the previous step"
    RETRY_COMPENSATION = "send the compensation again after a backoff (new attempt)"
    RESTART_COMPENSATION = "send the current compensation again with a fresh attempt count"
    PARK = "park: needs attention (admin retry)"
    FINISH = "finish"
    RECORD = "record in the step log only"
    DEAD_LETTER = "store in the dead-letter table"


@dataclass(frozen=True)
class Transition:
    to: str | None
    effect: Effect


T = Transition
# Every move a saga can make. A pair that is not here is refused (InvalidSagaEvent).
TABLE: dict[tuple[str | None, Event], Transition] = {
    (State.RUNNING, Event.ACTION_OK): T(State.RUNNING, Effect.SEND_NEXT_ACTION),
    (State.RUNNING, Event.ALL_STEPS_DONE): T(State.COMPLETED, Effect.FINISH),
    (State.RUNNING, Event.ACTION_BUSINESS): T(State.COMPENSATING, Effect.COMPENSATE_COMPLETED),
    (State.RUNNING, Event.ACTION_TRANSIENT): T(State.RUNNING, Effect.RETRY_ACTION),
    (State.RUNNING, Event.ACTION_EXHAUSTED): T(State.COMPENSATING, Effect.COMPENSATE_CURRENT),
    (State.RUNNING, Event.DEADLINE): T(State.RUNNING, Effect.RESEND),
    (State.RUNNING, Event.DEADLINE_EXHAUSTED): T(State.COMPENSATING, Effect.COMPENSATE_CURRENT),
    (State.RUNNING, Event.STALE_REPLY): T(State.RUNNING, Effect.RECORD),
    (State.COMPENSATING, Event.COMPENSATION_OK): T(State.COMPENSATING, Effect.SEND_NEXT_COMPENSATION),
    (State.COMPENSATING, Event.NOTHING_TO_COMPENSATE): T(State.COMPENSATED, Effect.FINISH),
    (State.COMPENSATING, Event.COMPENSATION_FAILED): T(State.COMPENSATING, Effect.RETRY_COMPENSATION),
    (State.COMPENSATING, Event.COMPENSATION_EXHAUSTED): T(State.PARKED, Effect.PARK),
    # Silence never parks: a compensation is re-sent (capped backoff) until its participant answers.
    (State.COMPENSATING, Event.DEADLINE): T(State.COMPENSATING, Effect.RESEND),
    (State.COMPENSATING, Event.STALE_REPLY): T(State.COMPENSATING, Effect.RECORD),
    # A late success of the compensation a saga parked on resumes it; failures are only recorded.
    (State.PARKED, Event.COMPENSATION_OK): T(State.COMPENSATING, Effect.SEND_NEXT_COMPENSATION),
    (State.PARKED, Event.COMPENSATION_FAILED): T(State.PARKED, Effect.RECORD),
    (State.PARKED, Event.STALE_REPLY): T(State.PARKED, Effect.RECORD),
    (State.PARKED, Event.ADMIN_RETRY): T(State.COMPENSATING, Effect.RESTART_COMPENSATION),
    (State.COMPLETED, Event.STALE_REPLY): T(State.COMPLETED, Effect.RECORD),
    (State.COMPENSATED, Event.STALE_REPLY): T(State.COMPENSATED, Effect.RECORD),
    # No saga to speak of: the consumer's wrapper stores the message (sagas.participants.consume).
    (None, Event.POISON): T(None, Effect.DEAD_LETTER),
}


class InvalidSagaEvent(ValueError):
    pass


@dataclass
class Context:
    """What an effect needs beyond the saga: the reply that caused it, or the failure to record."""

    reply: dict | None = None
    failure: dict | None = None
    extra: dict = field(default_factory=dict)


def orchestrator_alias(definition: SagaDefinition) -> str:
    return service_alias(definition.service)


def build_reply(command: dict, outcome: str, *, result: dict | None = None, error: Exception | None = None) -> dict:
    return {
        # Derived from the command, so re-computing a lost reply gives the same id (deduplicated upstream).
        "id": str(uuid.uuid5(uuid.UUID(command["id"]), "reply")),
        "command_id": command["id"],
        "saga_id": command["saga_id"],
        "saga": command["saga"],
        "step": command["step"],
        "direction": command["direction"],
        "outcome": outcome,
        "result": result or {},
        "error": {"code": getattr(error, "code", "error"), "detail": str(error)} if error else None,
    }


# --- classifying what happened -----------------------------------------------------------------------

def classify_reply(saga: SagaInstance, definition: SagaDefinition, reply: dict) -> tuple[Event, Context]:
    """Which event a participant's reply is for this saga, as it stands."""
    context = Context(reply=reply)
    outcome, error = reply["outcome"], reply.get("error") or {}
    if saga.state == State.PARKED:
        # Compensations are idempotent by key: a success of any attempt of the parked step means it is done.
        if reply["step"] == saga.current_step and reply["direction"] == Direction.COMPENSATION:
            return (Event.COMPENSATION_OK if outcome == Outcome.OK else Event.COMPENSATION_FAILED), context
        return Event.STALE_REPLY, context
    waiting_for = saga.current_message
    if saga.state not in SagaInstance.ACTIVE or not waiting_for or waiting_for["id"] != reply["command_id"]:
        return Event.STALE_REPLY, context
    step = definition.step(saga.current_step)
    if waiting_for["direction"] == Direction.COMPENSATION:
        if outcome == Outcome.OK:
            return Event.COMPENSATION_OK, context
        if saga.attempt >= settings.SAGA_COMPENSATION_ATTEMPTS:
            return Event.COMPENSATION_EXHAUSTED, context
        return Event.COMPENSATION_FAILED, context
    if outcome == Outcome.OK:
        return Event.ACTION_OK, context
    if outcome == Outcome.BUSINESS:
        context.failure = {"code": error.get("code") or "business_error", "detail": error.get("detail", "")}
        return Event.ACTION_BUSINESS, context
    if outcome == Outcome.TRANSIENT and step.retry.retries(error.get("code", "")) \
            and saga.attempt < step.retry.attempts:
        return Event.ACTION_TRANSIENT, context
    if outcome == Outcome.TRANSIENT:
        context.failure = {"code": step.retry.exhausted,
                           "detail": f"{step.name} failed {saga.attempt} times: {error.get('detail', '')}"}
        return Event.ACTION_EXHAUSTED, context
    return Event.STALE_REPLY, context  # e.g. "compensated": an action that found its tombstone


def classify_timeout(saga: SagaInstance) -> tuple[Event, Context]:
    """The event of a saga whose command went unanswered past its step deadline."""
    message = saga.current_message or {}
    if message.get("direction") == Direction.ACTION and saga.resends >= settings.SAGA_MAX_RESENDS:
        return Event.DEADLINE_EXHAUSTED, Context(failure={
            "code": "step_timeout", "detail": f"{message.get('step_name')} did not answer in time"})
    return Event.DEADLINE, Context()


# --- applying an event ---------------------------------------------------------------------------------

def apply(saga: SagaInstance, definition: SagaDefinition, event: Event, context: Context | None = None) -> None:
    """Make the move the table gives for (saga.state, event), then any move its effect leads to.

    Effects may produce a follow-up event: a local step's reply, or "no step / compensation left".
    """
    pending: tuple[Event, Context] | None = (event, context or Context())
    while pending is not None:
        event, context = pending
        transition = TABLE.get((saga.state, event))
        if transition is None:
            raise InvalidSagaEvent(f"saga {saga.pk}: no move for {event!r} in state {saga.state}")
        saga.state = transition.to
        pending = EFFECTS[transition.effect](saga, definition, context)


def _command(saga: SagaInstance, definition: SagaDefinition, direction: str) -> tuple[dict, Step]:
    step = definition.step(saga.current_step)
    message = {
        "id": str(uuid.uuid4()),
        "saga_id": str(saga.pk),
        "saga": definition.name,
        "step": saga.current_step,
        "step_name": step.name,
        "direction": direction,
        "attempt": saga.attempt,
        "key": f"{saga.pk}:{step.name}",
        "data": saga.data,
        "failure": saga.failure,
        "reply_queue": REPLY_QUEUE,
        "sent_at": timezone.now().isoformat(),
    }
    return message, step


def _send(saga: SagaInstance, definition: SagaDefinition, direction: str,
          *, delay_seconds: float = 0.0) -> tuple[Event, Context] | None:
    """Issue the command for the saga's current step and wait for its reply.

    A step of the orchestrator's own service runs right here, in the orchestrator's transaction (a local
    step: no message, no inbox needed, since it commits with the saga's new state), and its reply is
    returned as the next event. Any other step, or a local step that hit a transient fault, is a command
    in the outbox.
    """
    message, step = _command(saga, definition, direction)
    task = command_task(step, direction)
    assert task is not None
    saga.current_message = message
    if step.service == definition.service and not delay_seconds:
        reply = _run_local(message, task, using=orchestrator_alias(definition))
        if reply is not None:
            return _receive(saga, definition, reply)
    _queue(saga, queue=step.service, task=task, message=message, delay_seconds=delay_seconds)
    saga.step_deadline = timezone.now() + timedelta(seconds=settings.SAGA_STEP_TIMEOUT_SECONDS + delay_seconds)
    return None


def _run_local(command: dict, task_name: str, *, using: str) -> dict | None:
    """Run a local step's handler in a savepoint; None when it must go through the queue instead."""
    from sagas.participants import participant_handler

    handler = participant_handler(task_name)
    if handler is None:
        return None
    try:
        with transaction.atomic(using=using):
            result = handler(data=command["data"], key=command["key"], failure=command.get("failure"), fresh=False)
    except BusinessError as exc:
        return build_reply(command, Outcome.BUSINESS, error=exc)
    except TransientError:
        return None
    return build_reply(command, Outcome.OK, result=result)


def _receive(saga: SagaInstance, definition: SagaDefinition, reply: dict) -> tuple[Event, Context]:
    """Classify a reply and record it in the step log (a stale one with the outcome it brought)."""
    event, context = classify_reply(saga, definition, reply)
    command = saga.current_message or {}
    error = reply.get("error") or {}
    if event == Event.STALE_REPLY:
        _log(saga, definition, step=reply["step"], direction=reply["direction"], attempt=0,
             outcome=Outcome.STALE, message_id=reply["command_id"], error_code=reply["outcome"],
             error_detail=f"{error.get('code', '')} {error.get('detail', '')}".strip())
    else:
        _log(saga, definition, step=reply["step"], direction=reply["direction"],
             attempt=saga.attempt if reply["command_id"] == command.get("id") else 0,
             outcome=reply["outcome"], message_id=reply["command_id"], error_code=error.get("code", ""),
             error_detail=error.get("detail", ""), duration_ms=_duration_ms(command))
    return event, context


def _log(saga: SagaInstance, definition: SagaDefinition, *, step: int, direction: str, attempt: int,
         outcome: str, message_id: str | None = None, error_code: str = "", error_detail: str = "",
         duration_ms: float | None = None) -> None:
    """Add an entry to the saga's step log; it is written by _save, with the saga."""
    _pending(saga, "logs").append((
        step, definition.step(step).name, direction, attempt, outcome, message_id, (error_code or "")[:40],
        (error_detail or "")[:300], duration_ms,
    ))


def _queue(saga: SagaInstance, *, queue: str, task: str, message: dict, delay_seconds: float = 0.0) -> None:
    """Add a command to the orchestrator's outbox; it is written by _save, with the saga."""
    _pending(saga, "commands").append((message["id"], queue, task, json.dumps(message), delay_seconds))


def _pending(saga: SagaInstance, kind: str) -> list:  # type: ignore[type-arg]
    pending = saga.__dict__.setdefault("_pending", {"logs": [], "commands": []})
    return pending[kind]


SAGA_COLUMNS = ("saga_type", "state", "current_step", "attempt", "resends", "data", "failure", "current_message",
                "step_deadline", "deadline", "version", "created_at", "updated_at", "finished_at")
JSON_COLUMNS = {"data", "failure", "current_message"}
LOG_SQL = ("INSERT INTO sagas_sagasteplog (saga_id, step, step_name, direction, attempt, outcome, message_id, "
           "error_code, error_detail, duration_ms, at) VALUES {rows}")
LOG_ROW = "(%s, %s, %s, %s, %s, %s, %s::uuid, %s, %s, %s, now())"

def _save(saga: SagaInstance, *, using: str, created: bool = False, log_only: bool = False) -> None:
    """Write the saga, the step log entries and the commands recorded since it was loaded, in one statement
    (one round trip per move, whatever the move wrote); with `log_only`, the saga row itself is unchanged."""
    parts: list[tuple[str, list]] = []  # type: ignore[type-arg]
    now = timezone.now()
    if created or not log_only:
        saga.updated_at = now
        if created:
            saga.created_at = now
        else:
            saga.version += 1
        values = [_column_value(saga, column) for column in SAGA_COLUMNS]
        placeholders = ", ".join("%s::jsonb" if column in JSON_COLUMNS else "%s" for column in SAGA_COLUMNS)
        if created:
            parts.append((f"INSERT INTO sagas_sagainstance (id, {', '.join(SAGA_COLUMNS)}) "
                          f"VALUES (%s, {placeholders})", [saga.pk, *values]))
        else:
            assignments = ", ".join(f"{column} = {placeholder}" for column, placeholder in
                                    zip(SAGA_COLUMNS, placeholders.split(", "), strict=True))
            parts.append((f"UPDATE sagas_sagainstance SET {assignments} WHERE id = %s", [*values, saga.pk]))
    pending = saga.__dict__.pop("_pending", {"logs": [], "commands": []})
    if pending["logs"]:
        parts.append((LOG_SQL.format(rows=", ".join([LOG_ROW] * len(pending["logs"]))),
                      [value for row in pending["logs"] for value in (saga.pk, *row)]))
    if pending["commands"]:
        parts.append((outbox_insert_sql(len(pending["commands"])),
                      [value for row in pending["commands"] for value in row]))
    if not parts:
        return
    # Earlier parts become data-modifying CTEs of the last one: PostgreSQL runs every part exactly once.
    sql = parts[-1][0]
    if len(parts) > 1:
        sql = "WITH " + ", ".join(f"w{i} AS ({part})" for i, (part, _) in enumerate(parts[:-1])) + " " + sql
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [value for _, params in parts for value in params])


def _column_value(saga: SagaInstance, column: str) -> object:
    value = getattr(saga, column)
    return json.dumps(value) if column in JSON_COLUMNS and value is not None else value


def _duration_ms(command: dict) -> float | None:
    try:
        sent = datetime.fromisoformat(command["sent_at"])
    except (KeyError, ValueError):
        return None
    return (timezone.now() - sent).total_seconds() * 1000


def _next_compensation(definition: SagaDefinition, below_or_at: int) -> int | None:
    for index in range(below_or_at, -1, -1):
        if definition.step(index).compensation is not None:
            return index
    return None


def _compensate_from(saga: SagaInstance, definition: SagaDefinition, index: int) -> tuple[Event, Context] | None:
    target = _next_compensation(definition, index)
    if target is None:
        return Event.NOTHING_TO_COMPENSATE, Context()
    saga.current_step, saga.attempt, saga.resends = target, 1, 0
    return _send(saga, definition, Direction.COMPENSATION)


def _record_failure(saga: SagaInstance, definition: SagaDefinition, context: Context) -> None:
    saga.failure = {**(context.failure or {"code": "failed", "detail": ""}),
                    "step": definition.step(saga.current_step).name}


# Effects: each changes the saga (already in its new state) and may return the next event.
FollowUp = tuple[Event, Context] | None


def _send_next_action(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    if context.reply:
        saga.data = {**saga.data, **(context.reply.get("result") or {})}
    next_index = saga.current_step + 1
    if next_index >= len(definition.steps):
        return Event.ALL_STEPS_DONE, Context()
    saga.current_step, saga.attempt, saga.resends = next_index, 1, 0
    return _send(saga, definition, Direction.ACTION)


def _retry_action(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    saga.attempt += 1
    step = definition.step(saga.current_step)
    return _send(saga, definition, Direction.ACTION, delay_seconds=step.retry.delay(saga.attempt))


def _resend(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    message = saga.current_message
    step = definition.step(saga.current_step)
    task = command_task(step, message["direction"])
    saga.resends += 1
    _log(saga, definition, step=saga.current_step, direction=message["direction"], attempt=saga.attempt,
         outcome=Outcome.RESENT, message_id=message["id"])
    # The same message id: a consumer that already handled it answers again and does nothing.
    _queue(saga, queue=step.service, task=task, message=message)
    # Jitter, so that sagas silenced by one outage do not all come back in the same sweep.
    saga.step_deadline = timezone.now() + timedelta(seconds=resend_wait(saga.resends) * random.uniform(1.0, 1.1))
    return None


def resend_wait(resends: int) -> float:
    """How long to wait for the answer to a command re-sent `resends` times: exponential, capped."""
    base = settings.SAGA_STEP_TIMEOUT_SECONDS
    return min(base * 2 ** max(0, resends - 1), max(base, settings.SAGA_RESEND_MAX_SECONDS))


def _compensate_completed(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    _record_failure(saga, definition, context)
    return _compensate_from(saga, definition, saga.current_step - 1)


def _compensate_current(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    # A step whose outcome is unknown may have had its effect: undo it too. Its participant's tombstone
    # makes sure an action that lands after the undo does nothing.
    _record_failure(saga, definition, context)
    return _compensate_from(saga, definition, saga.current_step)


def _send_next_compensation(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    return _compensate_from(saga, definition, saga.current_step - 1)


def _retry_compensation(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    saga.attempt += 1
    # Compensations must eventually succeed: keep retrying, with a backoff capped at a few seconds.
    return _send(saga, definition, Direction.COMPENSATION, delay_seconds=min(5.0, 0.05 * 2 ** (saga.attempt - 2)))


def _restart_compensation(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    saga.attempt, saga.resends = 1, 0
    return _send(saga, definition, Direction.COMPENSATION)


def _park(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    saga.step_deadline = None
    return None


def _finish(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    saga.finished_at = timezone.now()
    saga.current_message = None
    saga.step_deadline = None
    return None


def _record(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    return None  # the step log entry was written when the reply was received


def _dead_letter(saga: SagaInstance, definition: SagaDefinition, context: Context) -> FollowUp:
    raise InvalidSagaEvent("poison messages have no saga; sagas.participants.consume stores them")


EFFECTS: dict[Effect, Callable[[SagaInstance, SagaDefinition, Context], FollowUp]] = {
    Effect.SEND_NEXT_ACTION: _send_next_action,
    Effect.RETRY_ACTION: _retry_action,
    Effect.RESEND: _resend,
    Effect.COMPENSATE_COMPLETED: _compensate_completed,
    Effect.COMPENSATE_CURRENT: _compensate_current,
    Effect.SEND_NEXT_COMPENSATION: _send_next_compensation,
    Effect.RETRY_COMPENSATION: _retry_compensation,
    Effect.RESTART_COMPENSATION: _restart_compensation,
    Effect.PARK: _park,
    Effect.FINISH: _finish,
    Effect.RECORD: _record,
    Effect.DEAD_LETTER: _dead_letter,
}


# --- entry points ----------------------------------------------------------------------------------------

def saga_start(*, definition: SagaDefinition, data: dict) -> SagaInstance:
    """Start a saga in the caller's transaction (on the orchestrator's database).

    Leading steps without an action were done by that very transaction; the first real action is sent.
    """
    first = next(i for i, step in enumerate(definition.steps) if step.action is not None)
    saga = SagaInstance(
        saga_type=definition.name, data=data, current_step=first, state=State.RUNNING,
        deadline=timezone.now() + timedelta(seconds=settings.SAGA_DEADLINE_SECONDS),
    )
    for index in range(first):
        _log(saga, definition, step=index, direction=Direction.ACTION, attempt=1, outcome=Outcome.OK)
    follow = _send(saga, definition, Direction.ACTION)
    if follow is not None:
        apply(saga, definition, *follow)
    _save(saga, using=orchestrator_alias(definition), created=True)
    return saga


REPLY_FIELDS = {"id": str, "command_id": str, "saga_id": str, "saga": str, "step": int, "direction": str,
                "outcome": str}
COMMAND_FIELDS = {"id": str, "saga_id": str, "saga": str, "step": int, "direction": str, "key": str,
                  "data": dict, "reply_queue": str}


def message_problem(message: object, fields: dict[str, type], *, kind: str) -> str | None:
    """Why `message` (a command or a reply, as received) can never be handled; None when it can."""
    if not isinstance(message, dict):
        return f"a {kind} must be a JSON object, not {type(message).__name__}"
    for name, expected in fields.items():
        if not isinstance(message.get(name), expected):
            return f"{kind} field {name!r} missing or not {expected.__name__}"
    if message["direction"] not in Direction.values:
        return f"unknown direction {message['direction']!r}"
    if "outcome" in fields and message["outcome"] not in Outcome.values:
        return f"unknown outcome {message['outcome']!r}"
    try:
        for name in ("id", "command_id", "saga_id"):
            if name in fields:
                uuid.UUID(message[name])
    except ValueError:
        return f"{kind} ids must be UUIDs"
    return None


CLAIM_AND_LOCK_SQL = """
WITH claim AS (
    INSERT INTO sagas_inboxmessage (message_id, consumer, received_at) VALUES (%s::uuid, %s, now())
    ON CONFLICT (consumer, message_id) DO NOTHING RETURNING id
)
SELECT EXISTS (SELECT 1 FROM claim) AS claimed, {columns}
FROM sagas_sagainstance WHERE id = %s::uuid FOR UPDATE
"""


def handle_reply(reply: dict) -> str:
    """Move the saga that `reply` answers. Returns what happened: advanced, duplicate or stale.

    Raises PoisonMessage for a reply no delivery could ever handle (the consumer dead-letters it)."""
    problem = message_problem(reply, REPLY_FIELDS, kind="reply")
    if problem:
        raise PoisonMessage(problem)
    try:
        definition = get_definition(reply["saga"])
    except KeyError:
        raise PoisonMessage(f"unknown saga type {reply['saga']!r}") from None
    if not 0 <= reply["step"] < len(definition.steps):
        raise PoisonMessage(f"saga {reply['saga']!r} has no step {reply['step']}")
    alias = orchestrator_alias(definition)
    with transaction.atomic(using=alias, durable=True):
        # One round trip: record the reply in the inbox and lock its saga.
        found = fetch(using=alias, sql=CLAIM_AND_LOCK_SQL.format(columns=model_columns(SagaInstance)),
                      params=[reply["id"], ORCHESTRATOR, reply["saga_id"]])
        if not found:
            raise PoisonMessage(f"no saga {reply['saga_id']}")  # rolls the inbox claim back with it
        claimed, *row = found[0]
        if not claimed:
            return "duplicate"
        saga = model_from_row(SagaInstance, using=alias, row=row)
        event, context = _receive(saga, definition, reply)
        record_only = TABLE.get((saga.state, event), Transition(None, Effect.FINISH)).effect == Effect.RECORD
        apply(saga, definition, event, context)
        _save(saga, using=alias, log_only=record_only)
    return "stale" if record_only else "advanced"


def _publication(alias: str, message_id: str) -> tuple[bool, datetime | None]:
    """(is a copy still waiting in the outbox, when the last copy was published), in one query."""
    copies = OutboxMessage.objects.using(alias).filter(message_id=message_id).aggregate(
        waiting=Count("pk", filter=Q(published_at__isnull=True)), at=Max("published_at"))
    return (True, None) if copies["waiting"] else (False, copies["at"])


def _sweep_one(definition: SagaDefinition, alias: str, saga_id: uuid.UUID) -> bool:
    now = timezone.now()
    with transaction.atomic(using=alias):
        saga = (SagaInstance.objects.using(alias).select_for_update(skip_locked=True)
                .filter(pk=saga_id, state__in=SagaInstance.ACTIVE, step_deadline__lt=now).first())
        if saga is None or not saga.current_message:
            return False
        # A step's deadline counts from the moment its command was published, not written: a command that
        # is still in the outbox (relay or broker away) is not late.
        waiting, published_at = _publication(alias, saga.current_message["id"])
        wait = timedelta(seconds=resend_wait(saga.resends))
        if waiting or (published_at is not None and published_at + wait > now):
            saga.step_deadline = now + wait if waiting else published_at + wait
            SagaInstance.objects.using(alias).filter(pk=saga.pk).update(step_deadline=saga.step_deadline)
            return False
        apply(saga, definition, *classify_timeout(saga))
        _save(saga, using=alias)
    return True


def sweep(*, definition: SagaDefinition, limit: int = 100) -> int:
    """Re-send the current command of every saga whose step went unanswered past its deadline; give up on
    an action after SAGA_MAX_RESENDS (it is then compensated). Each saga is handled in its own transaction:
    one that fails is logged and skipped. Returns how many were re-sent or given up on."""
    alias = orchestrator_alias(definition)
    overdue = list(
        SagaInstance.objects.using(alias)
        .filter(saga_type=definition.name, state__in=SagaInstance.ACTIVE, step_deadline__lt=timezone.now())
        .order_by("step_deadline").values_list("pk", flat=True)[:limit]
    )
    touched = 0
    for saga_id in overdue:
        try:
            touched += _sweep_one(definition, alias, saga_id)
        except Exception as exc:
            if connection_lost(exc):
                raise  # every other saga would fail the same way: let the caller back off
            logger.exception("sweeper: saga %s skipped", saga_id)
    return touched


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means a dependency is unreachable (the database, or Redis, which also holds the payment
    gateway's memory) as opposed to one bad row, statement or message: waiting, not giving up, is the cure.
    A deadlock, serialization failure or lock timeout is an OperationalError too, but not a lost connection."""
    return isinstance(exc, database_unavailable_errors() + broker_unavailable_errors()) and not is_conflict(exc)


def saga_retry(*, saga_id: uuid.UUID | str, saga_type: str) -> bool:
    """Resume a parked saga: its current compensation is sent again with a fresh attempt count."""
    definition = get_definition(saga_type)
    alias = orchestrator_alias(definition)
    with transaction.atomic(using=alias):
        saga = SagaInstance.objects.using(alias).select_for_update().filter(pk=saga_id).first()
        if saga is None or (saga.state, Event.ADMIN_RETRY) not in TABLE:
            return False
        apply(saga, definition, Event.ADMIN_RETRY)
        _save(saga, using=alias)
    return True


def table_text() -> str:
    width = max(len(str(state)) for state, _ in TABLE) + 2
    lines = [f"{'state':<{width}}{'event':<48}{'next state':<14}effect"]
    for (state, event), transition in TABLE.items():
        lines.append(f"{state or '-'!s:<{width}}{event.value:<48}{transition.to or '-'!s:<14}"
                     f"{transition.effect.value}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table_text())
