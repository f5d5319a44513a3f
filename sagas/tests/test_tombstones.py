"""A step's action and its compensation race, in every participant, both ways; the undo always wins.

Given a compensation that ran before its action (the saga gave up on a silent step), when the action
finally arrives, expect it to do nothing and answer "compensated". Given an action that is still running
when its compensation arrives, expect the compensation to wait for it and then undo it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from inventory.models import Product, Reservation
from payments.models import Payment, Wallet
from sagas.models import StepGuard
from sagas.participants import handle_command, participant_handler
from shipping.models import Shipment
from shop.routers import service_alias
from shop.testing import ADDRESS

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]

ORDER_ID = 4242


@dataclass(frozen=True)
class Participant:
    service: str
    step: int
    action: str
    compensation: str
    net_effect: Callable[[], int]  # what the action took and was not given back


def _stock_taken() -> int:
    return 100 - Product.objects.get(sku="SKU-T").on_hand


def _money_taken() -> int:
    wallet = Wallet.objects.get()
    return wallet.deposited_cents - wallet.balance_cents


def _shipments_live() -> int:
    return Shipment.objects.filter(order_id=ORDER_ID, status=Shipment.Status.SCHEDULED).count()


PARTICIPANTS = {
    "inventory": Participant("inventory", 1, "inventory.reserve_stock", "inventory.release_stock", _stock_taken),
    "payments": Participant("payments", 2, "payments.charge", "payments.refund", _money_taken),
    "shipping": Participant("shipping", 3, "shipping.schedule", "shipping.cancel", _shipments_live),
}


@pytest.fixture
def world(no_processes, make_product, make_customer):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-T", stock=100, price_cents=500)
    customer = make_customer(balance_cents=10_000)
    return {"order_id": ORDER_ID, "customer_id": customer.pk, "lines": [["SKU-T", 3]], "amount_cents": 1500,
            "payment_token": "tok_ok", "address": ADDRESS}


def command(participant: Participant, data: dict, direction: str, saga_id: str) -> dict:
    return {"id": str(uuid.uuid4()), "saga_id": saga_id, "saga": "order", "step": participant.step,
            "direction": direction, "key": f"{saga_id}:step{participant.step}", "data": data,
            "failure": {"code": "step_timeout"}, "reply_queue": "sagas"}


def run(participant: Participant, data: dict, direction: str, saga_id: str,
        handler: Callable[..., object] | None = None) -> dict:
    name = participant.action if direction == "action" else participant.compensation
    return handle_command(service=participant.service, message=command(participant, data, direction, saga_id),
                          handler=handler or participant_handler(name))


@pytest.mark.parametrize("name", PARTICIPANTS)
def test_an_action_after_its_compensation_does_nothing(world, name):
    participant, saga_id = PARTICIPANTS[name], str(uuid.uuid4())

    undo = run(participant, world, "compensation", saga_id)
    late = run(participant, world, "action", saga_id)

    assert undo["outcome"] == "ok", undo
    assert late["outcome"] == "compensated", late
    assert participant.net_effect() == 0
    assert not Reservation.objects.exists() and not Payment.objects.exists() and not Shipment.objects.exists()
    guard = StepGuard.objects.using(service_alias(participant.service)).get()
    assert guard.state == StepGuard.State.COMPENSATED


@pytest.mark.parametrize("name", PARTICIPANTS)
def test_a_compensation_after_its_action_undoes_it(world, name):
    participant, saga_id = PARTICIPANTS[name], str(uuid.uuid4())

    done = run(participant, world, "action", saga_id)
    assert (done["outcome"], participant.net_effect() > 0) == ("ok", True), done
    undo = run(participant, world, "compensation", saga_id)

    assert undo["outcome"] == "ok", undo
    assert participant.net_effect() == 0
    # A duplicate of the action (a broker redelivery, a sweeper re-send under another attempt) stays undone.
    assert run(participant, world, "action", saga_id)["outcome"] == "compensated"
    assert participant.net_effect() == 0


@pytest.mark.parametrize("name", PARTICIPANTS)
def test_a_compensation_waits_for_the_action_in_flight_then_undoes_it(world, name):
    participant, saga_id = PARTICIPANTS[name], str(uuid.uuid4())
    action_applied, let_action_commit = threading.Event(), threading.Event()
    results: dict[str, dict] = {}

    def slow_action(**kwargs: object) -> object:
        result = participant_handler(participant.action)(**kwargs)
        action_applied.set()
        assert let_action_commit.wait(30), "the test never let the action commit"
        return result

    def in_thread(label: str, direction: str, handler: Callable[..., object] | None = None) -> threading.Thread:
        def target() -> None:
            from django.db import connections

            try:
                results[label] = run(participant, world, direction, saga_id, handler)
            finally:
                connections.close_all()

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    action = in_thread("action", "action", slow_action)
    assert action_applied.wait(30), "the action never ran"
    compensation = in_thread("compensation", "compensation")
    # The compensation is blocked on the step's guard row while the action's transaction is open.
    compensation.join(1.0)
    assert compensation.is_alive(), results
    let_action_commit.set()
    action.join(30)
    compensation.join(30)

    assert (results["action"]["outcome"], results["compensation"]["outcome"]) == ("ok", "ok"), results
    assert participant.net_effect() == 0

