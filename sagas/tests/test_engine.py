"""The orchestrator alone: given a saga, when a reply arrives, expect the next command and state.

Nothing runs in the background here; each test hands the engine the replies a participant would send.
"""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from orders.models import Order
from orders.sagas import ORDER_SAGA
from sagas.engine import handle_reply, saga_retry, saga_start, sweep
from sagas.models import OutboxMessage, SagaInstance
from sagas.participants import handle_command
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


def last_command() -> dict:
    return commands().first().payload


def reply(command: dict, outcome: str = "ok", code: str = "", **extra) -> str:  # type: ignore[no-untyped-def]
    return handle_reply({
        "id": str(uuid.uuid4()), "command_id": command["id"], "saga_id": command["saga_id"], "saga": "order",
        "step": command["step"], "direction": command["direction"], "outcome": outcome,
        "result": extra, "error": {"code": code, "detail": code} if code else None,
    })


def expect(task: str, direction: str) -> dict:
    command = last_command()
    assert (commands().first().task,
            command["direction"]) == (task, direction)
    return command


def test_given_a_new_saga_expect_the_first_remote_step(no_processes):
    saga = start()
    command = expect("inventory.reserve_stock", "action")
    assert command["key"] == f"{saga.pk}:reserve_stock"
    assert commands().get(message_id=command["id"]).queue == "inventory"


def test_replies_advance_step_by_step_to_completed(no_processes):
    saga = start()
    for task in ("payments.charge", "shipping.schedule"):
        assert reply(last_command()) == "advanced"
        expect(task, "action")
    assert reply(last_command(), tracking_number="TRK1") == "advanced"
    saga.refresh_from_db()
    # confirm_order belongs to the orchestrator's own service: it ran in the same transaction, no message.
    assert saga.state == State.COMPLETED
    assert saga.finished_at is not None
    assert saga.data["tracking_number"] == "TRK1"
    assert order_of(saga).status == Order.Status.CONFIRMED
    assert not commands().filter(task="orders.confirm_order").exists()
    assert list(saga.log.order_by("id").values_list("step_name", "outcome"))[-1] == ("confirm_order", "ok")


def test_a_duplicate_or_stale_reply_changes_nothing(no_processes):
    saga = start()
    first = last_command()
    duplicate_id = str(uuid.uuid4())
    message = {"id": duplicate_id, "command_id": first["id"], "saga_id": first["saga_id"], "saga": "order",
               "step": 1, "direction": "action", "outcome": "ok", "result": {}, "error": None}
    assert handle_reply(message) == "advanced"
    assert handle_reply(message) == "duplicate"
    assert handle_reply({**message, "id": str(uuid.uuid4())}) == "stale"  # answers a command no longer awaited
    saga.refresh_from_db()
    assert saga.current_step == 2
    assert saga.version == 1


def test_a_business_failure_compensates_completed_steps_in_reverse(no_processes):
    saga = start()
    reply(last_command())  # reserved
    reply(last_command())  # charged
    reply(last_command(), "business", "undeliverable")
    expect("payments.refund", "compensation")
    reply(last_command())
    expect("inventory.release_stock", "compensation")
    reply(last_command())  # released; the order is rejected locally at once
    saga.refresh_from_db()
    assert saga.state == State.COMPENSATED
    assert (order_of(saga).status, order_of(saga).failure_reason) == (Order.Status.FAILED, "undeliverable")


def test_a_compensation_that_keeps_failing_parks_and_can_be_retried(no_processes, settings):
    settings.SAGA_COMPENSATION_ATTEMPTS = 3
    saga = start()
    reply(last_command())  # reserved
    reply(last_command(), "business", "payment_declined")
    for _ in range(3):
        expect("inventory.release_stock", "compensation")
        reply(last_command(), "transient", "error")
    saga.refresh_from_db()
    assert saga.state == State.PARKED
    assert order_of(saga).status == Order.Status.PENDING

    assert saga_retry(saga_id=saga.pk, saga_type="order")
    expect("inventory.release_stock", "compensation")
    reply(last_command())
    saga.refresh_from_db()
    assert saga.state == State.COMPENSATED
    assert order_of(saga).failure_reason == "payment_declined"


def test_the_sweeper_resends_the_same_command_then_gives_up(no_processes, settings):
    settings.SAGA_MAX_RESENDS = 2
    saga = start()
    first = last_command()
    for _ in range(2):
        SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now())
        assert sweep(definition=ORDER_SAGA) == 1
        assert last_command()["id"] == first["id"]  # same message id: the participant deduplicates
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now())
    sweep(definition=ORDER_SAGA)
    saga.refresh_from_db()
    assert saga.state == State.COMPENSATING
    assert saga.failure["code"] == "step_timeout"
    expect("inventory.release_stock", "compensation")  # the silent step's outcome is unknown: undo it too


def test_a_participant_answers_a_duplicate_with_the_stored_reply(no_processes):
    calls = []

    def handler(*, data: dict, key: str, failure: dict | None) -> dict:
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
