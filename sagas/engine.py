"""The orchestrator: starts sagas, advances them on replies, and sweeps the ones whose step went silent.

Every move happens in one transaction of the orchestrator's database: lock the saga row, check that the
reply answers the command the saga is waiting for, record it in the step log, change the saga's state,
and write the next command to the outbox. A crash anywhere leaves either the old state with the reply
still to be (re)delivered, or the new state with its command in the outbox.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from sagas.definitions import SagaDefinition, Step, get_definition, register
from sagas.models import SagaInstance, SagaStepLog
from sagas.outbox import outbox_send
from shop.errors import BusinessError, TransientError
from shop.routers import service_alias

logger = logging.getLogger(__name__)

REPLY_QUEUE = "sagas"
REPLY_TASK = "sagas.reply"
ORCHESTRATOR = "orchestrator"

State = SagaInstance.State
Direction = SagaStepLog.Direction
Outcome = SagaStepLog.Outcome

__all__ = ["build_reply", "handle_reply", "inbox_claim", "register", "saga_retry", "saga_start", "sweep"]


def orchestrator_alias(definition: SagaDefinition) -> str:
    return service_alias(definition.service)


def inbox_claim(*, using: str, consumer: str, message_id: str) -> tuple[bool, dict | None]:
    """Record `message_id` as received by `consumer` in the current transaction.

    Returns (True, None) the first time; (False, stored reply) for a duplicate. A concurrent duplicate
    waits on the unique index until the first delivery commits or rolls back.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(
            "INSERT INTO sagas_inboxmessage (message_id, consumer, received_at) VALUES (%s, %s, now()) "
            "ON CONFLICT (consumer, message_id) DO NOTHING RETURNING id",
            [message_id, consumer],
        )
        if cursor.fetchone() is not None:
            return True, None
        cursor.execute(
            "SELECT reply FROM sagas_inboxmessage WHERE consumer = %s AND message_id = %s", [consumer, message_id]
        )
        row = cursor.fetchone()
    reply = row[0] if row else None
    if isinstance(reply, str):  # raw cursors return jsonb as text with some adapters
        import json

        reply = json.loads(reply)
    return False, reply


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


def _send(saga: SagaInstance, definition: SagaDefinition, direction: str, *, delay_seconds: float = 0.0) -> None:
    """Issue the command for the saga's current step and wait for its reply.

    A step of the orchestrator's own service runs right here, in the orchestrator's transaction (a local
    step: no message, no inbox needed, since it commits with the saga's new state). Any other step, or a
    local step that hit a transient fault, is a command in the outbox.
    """
    message, step = _command(saga, definition, direction)
    task = step.action if direction == Direction.ACTION else step.compensation
    assert task is not None
    saga.current_message = message
    if step.service == definition.service and not delay_seconds:
        reply = _run_local(message, task, using=orchestrator_alias(definition))
        if reply is not None:
            _apply_reply(saga, definition, reply)
            return
    outbox_send(using=orchestrator_alias(definition), queue=step.service, task=task, payload=message,
                message_id=message["id"], delay_seconds=delay_seconds)
    saga.step_deadline = timezone.now() + timedelta(seconds=settings.SAGA_STEP_TIMEOUT_SECONDS + delay_seconds)


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


def _run_local(command: dict, task_name: str, *, using: str) -> dict | None:
    """Run a local step's handler in a savepoint; None when it must go through the queue instead."""
    from shop.celery import app

    if task_name not in app.tasks:
        # Outside a worker, Celery has not imported the apps' task modules yet.
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("tasks")
    handler = getattr(app.tasks.get(task_name), "handler", None)
    if handler is None:
        return None
    try:
        with transaction.atomic(using=using):
            result = handler(data=command["data"], key=command["key"], failure=command.get("failure"))
    except BusinessError as exc:
        return build_reply(command, Outcome.BUSINESS, error=exc)
    except TransientError:
        return None
    return build_reply(command, Outcome.OK, result=result)


def _log(saga: SagaInstance, definition: SagaDefinition, *, outcome: str, direction: str,
         message_id: str | None = None, error: dict | None = None, duration_ms: float | None = None,
         step: int | None = None) -> SagaStepLog:
    """Add an entry to the saga's step log; it is written by _save, with the saga."""
    index = saga.current_step if step is None else step
    log = SagaStepLog(
        saga=saga, step=index, step_name=definition.step(index).name, direction=direction,
        attempt=saga.attempt if step is None else 1, outcome=outcome, message_id=message_id,
        error_code=(error or {}).get("code", "")[:40], error_detail=(error or {}).get("detail", "")[:300],
        duration_ms=duration_ms,
    )
    if not hasattr(saga, "pending_logs"):
        saga.pending_logs = []  # type: ignore[attr-defined]
    saga.pending_logs.append(log)  # type: ignore[attr-defined]
    return log


def _save(saga: SagaInstance, *, using: str, created: bool = False) -> None:
    """Persist the saga and the step log entries recorded since it was loaded (in their order)."""
    if created:
        saga.save(using=using, force_insert=True)
    else:
        saga.version += 1
        saga.save(using=using)
    logs = getattr(saga, "pending_logs", [])
    SagaStepLog.objects.using(using).bulk_create(logs)
    saga.pending_logs = []  # type: ignore[attr-defined]


def _move(saga: SagaInstance, to: str) -> None:
    if to not in SagaInstance.TRANSITIONS[saga.state]:
        raise ValueError(f"saga {saga.pk}: {saga.state} -> {to} is not allowed")
    saga.state = to
    if to in (State.COMPLETED, State.COMPENSATED):
        saga.finished_at = timezone.now()
        saga.current_message = None
        saga.step_deadline = None


def saga_start(*, definition: SagaDefinition, data: dict) -> SagaInstance:
    """Start a saga in the caller's transaction (on the orchestrator's database).

    Leading steps without an action were done by that very transaction; the first real action is sent.
    """
    first = next(i for i, step in enumerate(definition.steps) if step.action is not None)
    saga = SagaInstance(
        saga_type=definition.name, data=data, current_step=first,
        deadline=timezone.now() + timedelta(seconds=settings.SAGA_DEADLINE_SECONDS),
    )
    for index in range(first):
        _log(saga, definition, outcome=Outcome.OK, direction=Direction.ACTION, step=index)
    _send(saga, definition, Direction.ACTION)
    _save(saga, using=orchestrator_alias(definition), created=True)
    return saga


def _next_compensation(definition: SagaDefinition, below_or_at: int) -> int | None:
    for index in range(below_or_at, -1, -1):
        if definition.step(index).compensation is not None:
            return index
    return None


def _fail(saga: SagaInstance, definition: SagaDefinition, *, code: str, detail: str, include_current: bool) -> None:
    """Start compensation: undo completed steps in reverse order, the current one too when its outcome is
    unknown (a transient failure that ran out of retries may have had an effect)."""
    saga.failure = {"code": code, "detail": detail, "step": definition.step(saga.current_step).name}
    _move(saga, State.COMPENSATING)
    _compensate_from(saga, definition, saga.current_step if include_current else saga.current_step - 1)


def _compensate_from(saga: SagaInstance, definition: SagaDefinition, index: int) -> None:
    target = _next_compensation(definition, index)
    if target is None:
        _move(saga, State.COMPENSATED)
        return
    saga.current_step, saga.attempt, saga.resends = target, 1, 0
    _send(saga, definition, Direction.COMPENSATION)


def _advance(saga: SagaInstance, definition: SagaDefinition) -> None:
    next_index = saga.current_step + 1
    if next_index >= len(definition.steps):
        _move(saga, State.COMPLETED)
        return
    saga.current_step, saga.attempt, saga.resends = next_index, 1, 0
    _send(saga, definition, Direction.ACTION)


def _on_action_reply(saga: SagaInstance, definition: SagaDefinition, reply: dict) -> None:
    step = definition.step(saga.current_step)
    error = reply.get("error") or {}
    if reply["outcome"] == Outcome.OK:
        saga.data = {**saga.data, **(reply.get("result") or {})}
        _advance(saga, definition)
    elif reply["outcome"] == Outcome.TRANSIENT and step.retry.retries(error.get("code", "")):
        if saga.attempt < step.retry.attempts:
            saga.attempt += 1
            _send(saga, definition, Direction.ACTION, delay_seconds=step.retry.delay(saga.attempt))
        else:
            _fail(saga, definition, code=step.retry.exhausted, include_current=True,
                  detail=f"{step.name} failed {saga.attempt} times: {error.get('detail', '')}")
    elif reply["outcome"] == Outcome.TRANSIENT:
        _fail(saga, definition, code=step.retry.exhausted, detail=error.get("detail", ""), include_current=True)
    else:
        _fail(saga, definition, code=error.get("code", "business_error"), detail=error.get("detail", ""),
              include_current=False)


def _on_compensation_reply(saga: SagaInstance, definition: SagaDefinition, reply: dict) -> None:
    if reply["outcome"] == Outcome.OK:
        _compensate_from(saga, definition, saga.current_step - 1)
        return
    if saga.attempt >= settings.SAGA_COMPENSATION_ATTEMPTS:
        _move(saga, State.PARKED)
        saga.step_deadline = None
        return
    saga.attempt += 1
    # Compensations must eventually succeed: keep retrying, with a backoff capped at a few seconds.
    _send(saga, definition, Direction.COMPENSATION, delay_seconds=min(5.0, 0.05 * 2 ** (saga.attempt - 2)))


def _duration_ms(command: dict) -> float | None:
    try:
        sent = datetime.fromisoformat(command["sent_at"])
    except (KeyError, ValueError):
        return None
    return (timezone.now() - sent).total_seconds() * 1000


def handle_reply(reply: dict) -> str:
    """Advance the saga that `reply` answers. Returns what happened: advanced, duplicate or stale."""
    definition = get_definition(reply["saga"])
    alias = orchestrator_alias(definition)
    with transaction.atomic(using=alias, durable=True):
        claimed, _ = inbox_claim(using=alias, consumer=ORCHESTRATOR, message_id=reply["id"])
        if not claimed:
            return "duplicate"
        saga = SagaInstance.objects.using(alias).select_for_update().filter(pk=reply["saga_id"]).first()
        waiting_for = saga.current_message if saga is not None else None
        if saga is None or saga.state not in SagaInstance.ACTIVE or not waiting_for \
                or waiting_for["id"] != reply["command_id"]:
            # An answer to a command the saga no longer waits for (re-sent, retried, or already handled).
            return "stale"
        _apply_reply(saga, definition, reply)
        _save(saga, using=alias)
    return "advanced"


def _apply_reply(saga: SagaInstance, definition: SagaDefinition, reply: dict) -> None:
    """Log the reply to the command the saga waits for, and move the saga on."""
    command = saga.current_message
    _log(saga, definition, outcome=reply["outcome"], direction=command["direction"], message_id=reply["command_id"],
         error=reply.get("error"), duration_ms=_duration_ms(command))
    if command["direction"] == Direction.ACTION:
        _on_action_reply(saga, definition, reply)
    else:
        _on_compensation_reply(saga, definition, reply)


def sweep(*, definition: SagaDefinition, limit: int = 100) -> int:
    """Re-send the current command of every saga whose step deadline passed; give up on a step after
    SAGA_MAX_RESENDS (an action then compensates; a compensation parks). Returns how many were touched."""
    alias = orchestrator_alias(definition)
    now = timezone.now()
    with transaction.atomic(using=alias):
        overdue = list(
            SagaInstance.objects.using(alias).select_for_update(skip_locked=True)
            .filter(saga_type=definition.name, state__in=SagaInstance.ACTIVE, step_deadline__lt=now)
            .order_by("step_deadline")[:limit]
        )
        for saga in overdue:
            message = saga.current_message
            direction = message["direction"]
            log = _log(saga, definition, outcome=Outcome.RESENT, direction=direction, message_id=message["id"])
            if saga.resends >= settings.SAGA_MAX_RESENDS:
                log.error_code, log.error_detail = "step_timeout", "no reply after every re-send"
                if direction == Direction.ACTION:
                    _fail(saga, definition, code="step_timeout", include_current=True,
                          detail=f"{message['step_name']} did not answer in time")
                else:
                    _move(saga, State.PARKED)
                    saga.step_deadline = None
            else:
                saga.resends += 1
                step = definition.step(saga.current_step)
                task = step.action if direction == Direction.ACTION else step.compensation
                # The same message id: a consumer that already handled it answers again and does nothing.
                outbox_send(using=alias, queue=step.service, task=task, payload=message, message_id=message["id"])
                saga.step_deadline = now + timedelta(seconds=settings.SAGA_STEP_TIMEOUT_SECONDS)
            _save(saga, using=alias)
    return len(overdue)


def saga_retry(*, saga_id: uuid.UUID | str, saga_type: str) -> bool:
    """Resume a parked saga: its current compensation is sent again with a fresh attempt count."""
    definition = get_definition(saga_type)
    alias = orchestrator_alias(definition)
    with transaction.atomic(using=alias):
        saga = SagaInstance.objects.using(alias).select_for_update().filter(pk=saga_id).first()
        if saga is None or saga.state != State.PARKED:
            return False
        _move(saga, State.COMPENSATING)
        saga.attempt, saga.resends = 1, 0
        _send(saga, definition, Direction.COMPENSATION)
        _save(saga, using=alias)
    return True
