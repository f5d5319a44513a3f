"""The orchestrator alone: given a saga in a state, when an event happens, expect the next state and effect.

Nothing runs in the background here; each test hands the engine the replies a participant would send, or
runs the sweeper by hand. `test_every_cell_of_the_table` is parametrised over sagas.engine.TABLE itself,
so a cell without a scenario here is a failing test, and `test_every_other_pair_is_refused` covers the
pairs the table does not have.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from orders.models import Order
from orders.sagas import ORDER_SAGA
from sagas.engine import TABLE, Effect, Event, InvalidSagaEvent, apply, handle_reply, saga_retry, saga_start, sweep
from sagas.models import DeadLetter, OutboxMessage, SagaInstance, SagaStepLog
from sagas.participants import consume, handle_command
from shop.routers import service_alias

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]

State = SagaInstance.State


def start() -> SagaInstance:
    order = Order.objects.create(customer_id=1, total_cents=100, payment_token="tok_ok", shipping_address={},
                                 flow="saga")
    return saga_start(definition=ORDER_SAGA, data={"order_id": order.pk, "customer_id": 1, "lines": [["SKU-A", 1]],
                                                    "amount_cents": 100, "payment_token": "tok_ok", "address": {}})


def order_of(saga: SagaInstance) -> Order:
    return Order.objects.get(pk=saga.data["order_id"])


def commands():  # type: ignore[no-untyped-def]
    return OutboxMessage.objects.using(service_alias("orders")).exclude(task="sagas.reply").order_by("-id")


def last_row() -> OutboxMessage:
    return commands().first()


def last_command() -> dict:
    return last_row().payload


def reply(command: dict, outcome: str = "ok", code: str = "", **extra) -> str:  # type: ignore[no-untyped-def]
    return handle_reply({
        "id": str(uuid.uuid4()), "command_id": command["id"], "saga_id": command["saga_id"], "saga": "order",
        "step": command["step"], "direction": command["direction"], "outcome": outcome,
        "result": extra, "error": {"code": code, "detail": code} if code else None,
    })


def expect(task: str, direction: str) -> dict:
    command = last_command()
    assert (last_row().task, command["direction"]) == (task, direction), (last_row().task, command)
    return command


def published_long_ago() -> None:
    """Play the relay: every command went out a minute ago, and the step deadlines have passed."""
    alias = service_alias("orders")
    OutboxMessage.objects.using(alias).update(published_at=timezone.now() - timedelta(minutes=1))
    SagaInstance.objects.using(alias).update(step_deadline=timezone.now() - timedelta(seconds=1))


def reload(saga: SagaInstance) -> SagaInstance:
    return SagaInstance.objects.using(service_alias("orders")).get(pk=saga.pk)


# --- given: a saga brought to a state by replies -----------------------------------------------------------

def running_at_reserve() -> SagaInstance:
    return start()


def running_at_charge() -> SagaInstance:
    saga = start()
    reply(last_command())
    return saga


def running_at_shipment() -> SagaInstance:
    saga = running_at_charge()
    reply(last_command())
    return saga


def compensating_at_refund() -> SagaInstance:
    saga = running_at_shipment()
    reply(last_command(), "business", "undeliverable")
    return saga


def compensating_at_release() -> SagaInstance:
    saga = running_at_charge()
    reply(last_command(), "business", "payment_declined")
    return saga


def parked_at_refund(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    settings.SAGA_COMPENSATION_ATTEMPTS = 1
    saga = compensating_at_refund()
    reply(last_command(), "transient", "error")
    assert reload(saga).state == State.PARKED
    return saga


def completed() -> SagaInstance:
    saga = running_at_shipment()
    reply(last_command())
    return saga


def compensated() -> SagaInstance:
    saga = start()
    reply(last_command(), "business", "out_of_stock")
    return saga


def stale(saga: SagaInstance) -> None:
    """A reply to a command this saga is not waiting for (an older attempt, say)."""
    result = handle_reply({
        "id": str(uuid.uuid4()), "command_id": str(uuid.uuid4()), "saga_id": str(saga.pk), "saga": "order",
        "step": 1, "direction": "action", "outcome": "ok", "result": {}, "error": None,
    })
    assert result == "stale"


def timeout(saga: SagaInstance, *, resends: int = 0) -> None:
    SagaInstance.objects.using(service_alias("orders")).filter(pk=saga.pk).update(resends=resends)
    published_long_ago()
    assert sweep(definition=ORDER_SAGA) == 1


# --- scenarios: (given, when) for every cell of the table ---------------------------------------------------

Scenario = Callable[..., SagaInstance]


def s_action_ok(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_reserve()
    reply(last_command())
    return saga


def s_all_steps_done(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_shipment()
    reply(last_command(), tracking_number="TRK1")
    return saga


def s_action_business(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_shipment()
    reply(last_command(), "business", "undeliverable")
    return saga


def s_action_transient(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_charge()
    reply(last_command(), "transient", "gateway_timeout")
    return saga


def s_action_exhausted(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_charge()
    reply(last_command(), "transient", "not_a_retried_code")
    return saga


def s_running_deadline(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_charge()
    timeout(saga)
    return saga


def s_running_deadline_exhausted(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    settings.SAGA_MAX_RESENDS = 2
    saga = running_at_charge()
    timeout(saga, resends=2)
    return saga


def s_running_stale(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = running_at_charge()
    stale(saga)
    return saga


def s_compensation_ok(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = compensating_at_refund()
    reply(last_command())
    return saga


def s_nothing_to_compensate(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = compensating_at_release()
    reply(last_command())  # released; rejecting the order is local, and nothing is left after it
    return saga


def s_compensation_failed(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = compensating_at_refund()
    reply(last_command(), "transient", "error")
    return saga


def s_compensation_exhausted(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    settings.SAGA_COMPENSATION_ATTEMPTS = 2
    saga = compensating_at_refund()
    reply(last_command(), "transient", "error")
    reply(last_command(), "transient", "error")
    return saga


def s_compensating_deadline(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    settings.SAGA_MAX_RESENDS = 1
    saga = compensating_at_refund()
    # Far past the resend limit of an action: a compensation is re-sent anyway, it never gives up.
    timeout(saga, resends=5)
    return saga


def s_compensating_stale(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = compensating_at_refund()
    stale(saga)
    return saga


def s_parked_compensation_ok(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = parked_at_refund(settings)
    parked_on = reload(saga).current_message
    # The participant finally answers the compensation the saga parked on.
    assert reply(parked_on) == "advanced"
    return saga


def s_parked_compensation_failed(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = parked_at_refund(settings)
    assert reply(reload(saga).current_message, "transient", "error") == "stale"
    return saga


def s_parked_stale(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = parked_at_refund(settings)
    stale(saga)
    return saga


def s_admin_retry(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = parked_at_refund(settings)
    assert saga_retry(saga_id=saga.pk, saga_type="order")
    return saga


def s_completed_stale(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = completed()
    stale(saga)
    return saga


def s_compensated_stale(settings) -> SagaInstance:  # type: ignore[no-untyped-def]
    saga = compensated()
    stale(saga)
    return saga


def s_poison(settings) -> None:  # type: ignore[no-untyped-def]
    consume(consumer="orchestrator", task="sagas.reply", queue="sagas", message={"saga": "order", "id": "x"},
            run=handle_reply)
    unknown_saga = {"id": str(uuid.uuid4()), "command_id": str(uuid.uuid4()), "saga_id": str(uuid.uuid4()),
                    "saga": "order", "step": 1, "direction": "action", "outcome": "ok", "result": {}, "error": None}
    consume(consumer="orchestrator", task="sagas.reply", queue="sagas", message=unknown_saga, run=handle_reply)
    return None


SCENARIOS: dict[tuple[str | None, Event], Scenario] = {
    (State.RUNNING, Event.ACTION_OK): s_action_ok,
    (State.RUNNING, Event.ALL_STEPS_DONE): s_all_steps_done,
    (State.RUNNING, Event.ACTION_BUSINESS): s_action_business,
    (State.RUNNING, Event.ACTION_TRANSIENT): s_action_transient,
    (State.RUNNING, Event.ACTION_EXHAUSTED): s_action_exhausted,
    (State.RUNNING, Event.DEADLINE): s_running_deadline,
    (State.RUNNING, Event.DEADLINE_EXHAUSTED): s_running_deadline_exhausted,
    (State.RUNNING, Event.STALE_REPLY): s_running_stale,
    (State.COMPENSATING, Event.COMPENSATION_OK): s_compensation_ok,
    (State.COMPENSATING, Event.NOTHING_TO_COMPENSATE): s_nothing_to_compensate,
    (State.COMPENSATING, Event.COMPENSATION_FAILED): s_compensation_failed,
    (State.COMPENSATING, Event.COMPENSATION_EXHAUSTED): s_compensation_exhausted,
    (State.COMPENSATING, Event.DEADLINE): s_compensating_deadline,
    (State.COMPENSATING, Event.STALE_REPLY): s_compensating_stale,
    (State.PARKED, Event.COMPENSATION_OK): s_parked_compensation_ok,
    (State.PARKED, Event.COMPENSATION_FAILED): s_parked_compensation_failed,
    (State.PARKED, Event.STALE_REPLY): s_parked_stale,
    (State.PARKED, Event.ADMIN_RETRY): s_admin_retry,
    (State.COMPLETED, Event.STALE_REPLY): s_completed_stale,
    (State.COMPENSATED, Event.STALE_REPLY): s_compensated_stale,
    (None, Event.POISON): s_poison,
}


def check_effect(effect: Effect, saga: SagaInstance | None, cell: tuple) -> None:  # type: ignore[type-arg]
    """What each effect leaves behind, seen from the outside (outbox, step log, saga row)."""
    if effect == Effect.DEAD_LETTER:
        letters = list(DeadLetter.objects.using(service_alias("orders")).values_list("consumer", "error"))
        assert len(letters) == 2, letters
        assert all(consumer == "orchestrator" and error.startswith("poison") for consumer, error in letters), letters
        assert not SagaInstance.objects.exists()
        return
    assert saga is not None
    command = saga.current_message
    row = last_row()
    if effect == Effect.SEND_NEXT_ACTION:
        assert (row.task, command["step_name"], saga.attempt) == ("payments.charge", "charge_payment", 1)
    elif effect == Effect.RETRY_ACTION:
        assert (row.task, saga.attempt) == ("payments.charge", 2)
        # A delayed row the relay publishes when due: no Celery ETA.
        assert row.available_at > row.created_at, (row.available_at, row.created_at)
    elif effect == Effect.RESEND:
        assert row.message_id == uuid.UUID(command["id"]) and row.published_at is None, row
        assert commands().filter(message_id=command["id"]).count() == 2
        assert saga.log.filter(outcome=SagaStepLog.Outcome.RESENT).exists()
    elif effect == Effect.COMPENSATE_COMPLETED:
        assert (row.task, saga.failure["code"], saga.failure["step"]) == (
            "payments.refund", "undeliverable", "schedule_shipment")
    elif effect == Effect.COMPENSATE_CURRENT:
        # The charge's outcome is unknown: it is refunded too (its tombstone stops a late charge).
        assert row.task == "payments.refund", row.task
        assert saga.failure["step"] == "charge_payment"
        assert saga.failure["code"] in ("payment_unavailable", "step_timeout"), saga.failure
    elif effect == Effect.SEND_NEXT_COMPENSATION:
        assert (row.task, command["direction"], saga.attempt) == ("inventory.release_stock", "compensation", 1)
    elif effect == Effect.RETRY_COMPENSATION:
        assert (row.task, saga.attempt) == ("payments.refund", 2)
        assert row.available_at > row.created_at
    elif effect == Effect.RESTART_COMPENSATION:
        assert (row.task, saga.attempt, saga.resends) == ("payments.refund", 1, 0)
        assert row.published_at is None
    elif effect == Effect.PARK:
        assert (saga.step_deadline, command["direction"], command["step_name"]) == (
            None, "compensation", "charge_payment"), command
    elif effect == Effect.FINISH:
        assert saga.finished_at is not None and command is None and saga.step_deadline is None
        expected = Order.Status.CONFIRMED if saga.state == State.COMPLETED else Order.Status.FAILED
        assert order_of(saga).status == expected
    elif effect == Effect.RECORD:
        last = saga.log.order_by("-id").first()
        assert last.outcome in (SagaStepLog.Outcome.STALE, SagaStepLog.Outcome.TRANSIENT), (last.outcome, cell)
    else:  # pragma: no cover - a new effect needs its check here
        raise AssertionError(f"no check for {effect}")


def test_every_cell_has_a_scenario():
    assert set(SCENARIOS) == set(TABLE), set(TABLE) ^ set(SCENARIOS)


@pytest.mark.parametrize("cell", list(TABLE), ids=lambda cell: f"{cell[0] or '-'}|{cell[1].value}")
def test_every_cell_of_the_table(no_processes, settings, cell):
    transition = TABLE[cell]
    saga = SCENARIOS[cell](settings)
    if saga is not None:
        saga = reload(saga)
        assert saga.state == transition.to, (cell, saga.state, list(saga.log.values_list("step_name", "outcome")))
    check_effect(transition.effect, saga, cell)


@pytest.mark.parametrize("cell", [(state, event) for state in State.values for event in Event
                                  if (state, event) not in TABLE])
def test_every_other_pair_is_refused(no_processes, cell):
    saga = SagaInstance(saga_type="order", state=cell[0], data={}, deadline=timezone.now())
    with pytest.raises(InvalidSagaEvent):
        apply(saga, ORDER_SAGA, cell[1])
    assert saga.state == cell[0]


def test_a_recorded_reply_changes_nothing_but_the_log(no_processes):
    saga = running_at_charge()
    version = reload(saga).version
    first = last_command()
    duplicate = {"id": str(uuid.uuid4()), "command_id": first["id"], "saga_id": first["saga_id"], "saga": "order",
                 "step": 2, "direction": "action", "outcome": "ok", "result": {}, "error": None}
    assert handle_reply(duplicate) == "advanced"
    assert handle_reply(duplicate) == "duplicate"
    assert handle_reply({**duplicate, "id": str(uuid.uuid4())}) == "stale"  # answers a command no longer awaited
    saga = reload(saga)
    assert (saga.current_step, saga.version) == (3, version + 1)
    assert saga.log.filter(outcome=SagaStepLog.Outcome.STALE, step=2).count() == 1


def test_replies_advance_step_by_step_to_completed(no_processes):
    saga = start()
    assert last_row().queue == "inventory"
    assert last_command()["key"] == f"{saga.pk}:reserve_stock"
    for task in ("payments.charge", "shipping.schedule"):
        assert reply(last_command()) == "advanced"
        expect(task, "action")
    assert reply(last_command(), tracking_number="TRK1") == "advanced"
    saga = reload(saga)
    # confirm_order belongs to the orchestrator's own service: it ran in the same transaction, no message.
    assert saga.state == State.COMPLETED
    assert saga.data["tracking_number"] == "TRK1"
    assert not commands().filter(task="orders.confirm_order").exists()
    assert list(saga.log.order_by("id").values_list("step_name", "outcome"))[-1] == ("confirm_order", "ok")


def test_a_business_failure_compensates_completed_steps_in_reverse(no_processes):
    saga = compensating_at_refund()
    expect("payments.refund", "compensation")
    reply(last_command())
    expect("inventory.release_stock", "compensation")
    reply(last_command())  # released; the order is rejected locally at once
    saga = reload(saga)
    assert saga.state == State.COMPENSATED
    assert (order_of(saga).status, order_of(saga).failure_reason) == (Order.Status.FAILED, "undeliverable")


def test_a_command_still_in_the_outbox_is_not_late(no_processes, settings):
    """Deadlines count from publishing: a relay or broker outage of any length fails no saga."""
    settings.SAGA_MAX_RESENDS = 1
    saga = running_at_charge()
    alias = service_alias("orders")
    for _ in range(5):
        SagaInstance.objects.using(alias).filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(hours=1))
        assert sweep(definition=ORDER_SAGA) == 0
    saga = reload(saga)
    assert (saga.state, saga.resends) == (State.RUNNING, 0)
    assert saga.step_deadline > timezone.now()
    # Published just now: the deadline counts from that moment, not from when the row was written.
    OutboxMessage.objects.using(alias).update(published_at=timezone.now())
    SagaInstance.objects.using(alias).filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(hours=1))
    assert sweep(definition=ORDER_SAGA) == 0
    assert reload(saga).step_deadline > timezone.now() + timedelta(seconds=settings.SAGA_STEP_TIMEOUT_SECONDS / 2)


def test_one_bad_saga_does_not_stop_the_sweep(no_processes):
    broken, healthy = running_at_charge(), running_at_charge()
    alias = service_alias("orders")
    # A saga whose current command names a step the definition does not have: sweeping it raises.
    SagaInstance.objects.using(alias).filter(pk=broken.pk).update(
        current_message={**reload(broken).current_message, "step": 99}, current_step=99)
    published_long_ago()
    assert sweep(definition=ORDER_SAGA) == 1
    assert reload(healthy).resends == 1
    assert reload(broken).resends == 0


def test_a_participant_answers_a_duplicate_with_the_stored_reply(no_processes):
    calls = []

    def handler(*, data: dict, key: str, failure: dict | None, fresh: bool) -> dict:
        calls.append(key)
        return {"n": len(calls)}

    command = {"id": str(uuid.uuid4()), "saga_id": str(uuid.uuid4()), "saga": "order", "step": 1,
               "direction": "action", "key": "k", "data": {}, "failure": None, "reply_queue": "sagas"}
    first = handle_command(service="inventory", message=command, handler=handler)
    second = handle_command(service="inventory", message=command, handler=handler)
    assert calls == ["k"]
    assert first == second
    assert first["result"] == {"n": 1}
    replies = OutboxMessage.objects.using(service_alias("inventory")).filter(task="sagas.reply", message_id=first["id"])
    assert replies.count() == 2


def test_a_handler_that_keeps_crashing_is_dead_lettered_after_every_try(no_processes, settings):
    settings.SAGA_MESSAGE_ATTEMPTS = 2
    calls = []

    def handler(*, data: dict, key: str, failure: dict | None, fresh: bool) -> dict:
        calls.append(key)
        raise RuntimeError("bug in the handler")

    command = {"id": str(uuid.uuid4()), "saga_id": str(uuid.uuid4()), "saga": "order", "step": 1,
               "direction": "action", "key": "k", "data": {}, "failure": None, "reply_queue": "sagas"}
    consume(consumer="inventory", task="inventory.reserve_stock", queue="inventory", message=command,
            run=lambda m: handle_command(service="inventory", message=m, handler=handler))
    assert calls == ["k", "k"]
    letter = DeadLetter.objects.using(service_alias("inventory")).get()
    assert (letter.deliveries, letter.message_id, letter.payload) == (2, command["id"], command)
    assert "bug in the handler" in letter.error
    # Nothing of the failed tries stayed behind: no inbox row, no reply.
    assert not OutboxMessage.objects.using(service_alias("inventory")).filter(task="sagas.reply").exists()
