"""Saga participants: a Celery task per command, made idempotent and race-safe by the engine, not by the
participant's own code.

The tasks are not written by hand: every action and compensation a saga definition's steps name (plain
functions with the one signature of shop.steps) becomes a task `<service>.<function name>` when the
definition is registered (`participant_tasks`), consuming from the service's queue.

In one transaction of the service's own database the task records the message in its inbox, takes the
step's guard row, runs the handler, stores the reply and writes it to the outbox (a failure rolls all of it
back and is answered from a transaction of its own). A duplicate delivery finds the inbox row and
re-sends the stored reply, changing nothing. The guard row (sagas.models.StepGuard, keyed by the step's
`{saga_id}:{step}`) is shared by a step's action and its compensation: a compensation leaves a tombstone,
and an action that arrives after it does nothing and answers "compensated".

Every consumer (participants and the orchestrator) runs through `consume`: while its database is away it
waits with capped backoff (then gives the message back to the broker, never a Celery ETA); a message that
can never be handled (malformed, unknown saga) or that fails on every try goes to the dead-letter table.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from django.conf import settings
from django.db import connections, transaction

from monitoring import metrics
from sagas.definitions import SagaDefinition, all_definitions, task_name
from sagas.engine import (
    COMMAND_FIELDS,
    ORCHESTRATOR,
    REPLY_TASK,
    PoisonMessage,
    build_reply,
    connection_lost,
    message_problem,
)
from sagas.models import DeadLetter, InboxMessage, SagaStepLog, StepGuard
from sagas.outbox import outbox_insert_sql, outbox_send
from shop.backoff import Backoff, FailureLog
from shop.errors import BusinessError, TransientError
from shop.logs import log_context
from shop.routers import service_alias

logger = logging.getLogger(__name__)

Handler = Callable[..., dict | None]

# One round trip before the handler: record the message in the inbox and take the step's guard row. An action
# keeps whatever state the row has (a tombstone stays a tombstone); a compensation always leaves the
# tombstone. Either way the row stays locked until the transaction ends, so a step's action and compensation
# never overlap. `fresh`: the row was created just now, so no effect under this key was ever committed.
CLAIM_SQL = """
WITH claim AS (
    INSERT INTO sagas_inboxmessage (message_id, consumer, received_at) VALUES (%(id)s, %(consumer)s, now())
    ON CONFLICT (consumer, message_id) DO NOTHING RETURNING id
), guard AS (
    INSERT INTO sagas_stepguard (consumer, key, state, updated_at) VALUES (%(consumer)s, %(key)s, %(state)s, now())
    ON CONFLICT (consumer, key) DO UPDATE SET state = {state}, updated_at = now()
    RETURNING state, xmax = 0 AS fresh
)
SELECT EXISTS (SELECT 1 FROM claim), guard.state, guard.fresh FROM guard
"""
ACTION_CLAIM_SQL = CLAIM_SQL.format(state="sagas_stepguard.state")
COMPENSATION_CLAIM_SQL = CLAIM_SQL.format(state="EXCLUDED.state")

# One round trip after it: keep the reply for duplicates and send it, in the same transaction as the effect.
REPLY_SQL = ("WITH kept AS (UPDATE sagas_inboxmessage SET reply = %s::jsonb "
             "WHERE consumer = %s AND message_id = %s::uuid) " + outbox_insert_sql(1))


def _claim(alias: str, service: str, message: dict) -> tuple[bool, str, bool]:
    """(first delivery, the step guard's state, whether the guard was created just now)."""
    return message_claim(using=alias, consumer=service, message_id=message["id"], key=message["key"],
                         compensating=message["direction"] == SagaStepLog.Direction.COMPENSATION)


def message_claim(*, using: str, consumer: str, message_id: str, key: str,
                  compensating: bool) -> tuple[bool, str, bool]:
    """In the caller's transaction on `using`: record message `message_id` in `consumer`'s inbox and take the
    step guard `key` (a compensation leaves the tombstone). Returns (first delivery, the guard's state,
    whether the guard was created just now). Any consumer of commands or events claims this way."""
    state = StepGuard.State.COMPENSATED if compensating else StepGuard.State.ACTED
    with connections[using].cursor() as cursor:
        cursor.execute(COMPENSATION_CLAIM_SQL if compensating else ACTION_CLAIM_SQL,
                       {"id": message_id, "consumer": consumer, "key": key, "state": state})
        claimed, guard, fresh = cursor.fetchone()
    return claimed, guard, fresh


def _keep_and_send(alias: str, service: str, message: dict, reply: dict) -> None:
    with connections[alias].cursor() as cursor:
        body = json.dumps(reply)
        cursor.execute(REPLY_SQL, [body, service, message["id"], reply["id"], message["reply_queue"], REPLY_TASK,
                                   body, 0])


def _send_stored(alias: str, service: str, message: dict) -> dict:
    """A duplicate delivery: answer again what the first one answered, and change nothing."""
    metrics.count("inbox_duplicates", consumer=service)
    stored = InboxMessage.objects.using(alias).filter(consumer=service, message_id=message["id"]).values_list(
        "reply", flat=True).first()
    if stored is not None:
        outbox_send(using=alias, queue=message["reply_queue"], task=REPLY_TASK, payload=stored,
                    message_id=stored["id"])
    return stored or {}


def handle_command(*, service: str, message: dict, handler: Handler) -> dict:
    """Run one command exactly once in effect, and answer it (see the module docstring).

    The handler runs in the transaction itself, with no savepoint: on a business or transient failure the
    whole transaction is rolled back (whatever the handler had written with it) and the failure is recorded
    in a transaction of its own. The common, successful path costs two statements besides the handler's.
    """
    problem = message_problem(message, COMMAND_FIELDS, kind="command")
    if problem:
        raise PoisonMessage(problem)
    alias = service_alias(service)
    failure: BusinessError | TransientError | None = None
    with transaction.atomic(using=alias, durable=True):
        claimed, guard, fresh = _claim(alias, service, message)
        if not claimed:
            return _send_stored(alias, service, message)
        if message["direction"] == SagaStepLog.Direction.ACTION and guard == StepGuard.State.COMPENSATED:
            # The step was compensated before this action arrived: applying it now would undo the undo.
            reply = build_reply(message, SagaStepLog.Outcome.COMPENSATED)
        else:
            try:
                result = _call(handler, message, fresh=fresh)
                reply = build_reply(message, "ok", result=result)
            except (BusinessError, TransientError) as exc:
                failure = exc
                transaction.set_rollback(True, using=alias)
        if failure is None:
            _keep_and_send(alias, service, message, reply)
            return reply
    reply = build_reply(message, "business" if isinstance(failure, BusinessError) else "transient", error=failure)
    with transaction.atomic(using=alias, durable=True):
        claimed, _, _ = _claim(alias, service, message)
        if not claimed:  # a duplicate delivery answered meanwhile
            return _send_stored(alias, service, message)
        _keep_and_send(alias, service, message, reply)
    return reply


def _call(handler: Handler, message: dict, *, fresh: bool) -> dict | None:
    # `fresh`: the guard row was created by this very transaction, so no effect under this key exists yet and
    # the handler may skip looking for one.
    return handler(data=message["data"], key=message["key"], failure=message.get("failure"), fresh=fresh)


# One failure log per consumer and process: an outage is reported once per period, not once per message.
_outage_logs: dict[str, FailureLog] = {}


def _outage_log(consumer: str) -> FailureLog:
    if consumer not in _outage_logs:
        _outage_logs[consumer] = FailureLog(logger, f"{consumer}: database or Redis unavailable", period=30.0)
    return _outage_logs[consumer]


def consume(*, consumer: str, task: str, queue: str, message: Any, run: Callable[[Any], Any]) -> Any:
    """Run `run(message)` as an at-least-once consumer must.

    - database or Redis away (connection lost, server restarting): wait with capped, jittered backoff and try
      again;
      after SAGA_DB_WAIT_SECONDS give the message back to the broker (Reject with requeue), unacknowledged
      work is never dropped and never delayed with an ETA;
    - PoisonMessage: dead-lettered at once, since no delivery can ever handle it;
    - anything else: tried SAGA_MESSAGE_ATTEMPTS times, then dead-lettered with the error.
    """
    with log_context(**_message_context(message)):
        return _consume(consumer=consumer, task=task, queue=queue, message=message, run=run)


def _message_context(message: Any) -> dict[str, object]:
    """The saga and order a message is about, for every line logged while it is handled."""
    if not isinstance(message, dict):
        return {}
    data = message.get("data")
    return {"saga_id": message.get("saga_id"), "order_id": data.get("order_id") if isinstance(data, dict) else None}


def _consume(*, consumer: str, task: str, queue: str, message: Any, run: Callable[[Any], Any]) -> Any:
    alias = _dead_letter_alias(consumer, message)
    failures, waited, backoff, outage = 0, 0.0, Backoff(initial=0.1, cap=5.0), _outage_log(consumer)
    while True:
        try:
            result = run(message)
        except PoisonMessage as exc:
            return _dead_letter(alias, consumer, task, queue, message, f"poison: {exc}", deliveries=1)
        except Exception as exc:
            delay = backoff.next_delay()
            if connection_lost(exc):
                outage.failed(exc, retry_in=delay)
                connections.close_all()  # the next try reconnects
                if waited >= settings.SAGA_DB_WAIT_SECONDS:
                    raise Reject(f"a dependency unavailable for {waited:.0f} s", requeue=True) from exc
            else:
                failures += 1
                logger.exception("%s: %s failed (try %s of %s)", consumer, task, failures,
                                 settings.SAGA_MESSAGE_ATTEMPTS)
                if failures >= settings.SAGA_MESSAGE_ATTEMPTS:
                    return _dead_letter(alias, consumer, task, queue, message, f"{type(exc).__name__}: {exc}",
                                        deliveries=failures)
            time.sleep(delay)
            waited += delay
        else:
            outage.recovered()
            return result


def _dead_letter_alias(consumer: str, message: Any) -> str:
    """The consumer's own database; for the orchestrator, that of the saga type the message names."""
    from sagas.definitions import get_definition

    if consumer != ORCHESTRATOR:
        return service_alias(consumer)
    try:
        return service_alias(get_definition(message["saga"]).service)
    except (TypeError, KeyError):
        return "default"


def _dead_letter(alias: str, consumer: str, task: str, queue: str, message: Any, error: str,
                 *, deliveries: int) -> None:
    message_id = message.get("id", "") if isinstance(message, dict) else ""
    try:
        DeadLetter.objects.using(alias).create(
            consumer=consumer, task=task, queue=queue, message_id=str(message_id)[:100],
            payload=message if isinstance(message, dict | list | str | int | float) else repr(message),
            error=error[:4000], deliveries=deliveries,
        )
    except Exception as exc:
        # Keep the message in the broker rather than lose it when even the dead-letter table is out of reach.
        raise Reject(f"could not dead-letter: {exc}", requeue=True) from exc
    logger.error("%s: dead-lettered a %s message %s: %s", consumer, task, message_id, error)


# Every participant's handler by task name: the orchestrator runs its own service's steps in-process, and
# tests call handlers directly. Kept here rather than on the Celery task object, which an app may rebuild.
HANDLERS: dict[str, Handler] = {}


def participant_handler(name: str) -> Handler | None:
    if name not in HANDLERS:
        all_definitions()  # a process that has not imported the saga definitions yet (outside a worker)
    return HANDLERS.get(name)


def participant_tasks(definition: SagaDefinition) -> None:
    """A Celery task for every action and compensation of `definition`'s steps, named by sagas.definitions.
    task_name. Definitions that share a step share its task; two functions under one name are refused."""
    for step in definition.steps:
        for function in (step.action, step.compensation):
            if function is None:
                continue
            name = task_name(step, function)
            known = HANDLERS.get(name)
            if known is None:
                _participant_task(service=step.service, name=name, handler=function)
            elif known is not function:
                raise ValueError(f"task {name} would run both {known.__qualname__} and {function.__qualname__}")


def _participant_task(*, service: str, name: str, handler: Handler) -> None:
    HANDLERS[name] = handler

    @shared_task(name=name, acks_late=True)
    def task(message: dict) -> None:
        consume(consumer=service, task=name, queue=service, message=message,
                run=lambda m: handle_command(service=service, message=m, handler=handler))
