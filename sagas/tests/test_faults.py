"""Faults against the real processes (Celery workers, relays, sweeper): a late action after its
compensation, an outage longer than a step deadline, poison messages. Every saga still ends where it
should, and the audit is clean."""

from __future__ import annotations

import sys
import time
import uuid

import pytest

from orders.models import Order
from payments.models import Payment, Wallet
from sagas.models import DeadLetter, OutboxMessage, SagaStepLog
from sagas.processes import QUEUES, sweeper_command
from sagas.services import dead_letter_redrive
from sagas.tests.test_crashes import _charge_in_progress
from sagas.tests.test_order_saga import assert_audit_clean, place, saga_of, wait_final
from shop.routers import service_alias
from shop.testing import wait_until

FROZEN_APP = "fault-test-payments"
pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.fixture
def buyer(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=50, price_cents=1000)
    customer = make_customer(balance_cents=1_000_000)
    return client_for(customer)


def _relays(stack) -> list[str]:  # type: ignore[no-untyped-def]
    return [name for name in stack.procs if name.startswith("relay-")]


def test_an_action_that_lands_after_its_compensation_started_is_undone(saga, buyer):
    """The payments participant is frozen inside a charge past the step deadline; the saga gives up on the
    step and refunds it while the charge is still in flight. The refund waits for the charge, then undoes it:
    the FAILED order holds no money and no stock."""
    saga.stop("worker")
    saga.stop("sweeper")
    saga.worker("worker-rest", tuple(q for q in QUEUES if q != "payments"))
    saga.worker("worker-payments-frozen", ("payments",), PAYMENT_LATENCY_MS="12000", PGAPPNAME=FROZEN_APP)
    # Gives up on a silent step after one re-send (about two step timeouts).
    saga.start("sweeper-impatient", sweeper_command(sys.executable), SAGA_MAX_RESENDS="1")

    order = place(buyer, [("SKU-A", 2)])
    # The frozen worker is inside the charge: its transaction has written and not committed.
    assert wait_until(lambda: _charge_in_progress(FROZEN_APP), timeout=60), saga.logs()
    # The frozen worker holds the charge; a healthy one takes whatever comes next (the refund).
    saga.worker("worker-payments", ("payments",))

    final = wait_final(buyer, order["id"], saga)

    assert (final["status"], final["failure_reason"]) == ("FAILED", "step_timeout"), final
    payment = Payment.objects.filter(order_id=order["id"]).first()
    # The charge did land (late) and was refunded; had the refund run first, it would have been tombstoned.
    assert payment is None or payment.status == Payment.Status.REFUNDED, payment
    wallet = Wallet.objects.get(customer_id=saga_of(order["id"]).data["customer_id"])
    assert wallet.balance_cents == wallet.deposited_cents
    outcomes = list(SagaStepLog.objects.filter(saga=saga_of(order["id"]), step_name="charge_payment")
                    .values_list("direction", "outcome"))
    assert ("compensation", "ok") in outcomes, outcomes
    assert wait_until(lambda: ("action", "stale") in list(
        SagaStepLog.objects.filter(saga=saga_of(order["id"]), step_name="charge_payment")
        .values_list("direction", "outcome")), timeout=30), outcomes
    saga.stop("worker-payments-frozen")
    saga.stop("sweeper-impatient")
    saga.standard()
    assert_audit_clean(saga)


def test_a_relay_outage_longer_than_the_step_deadline_fails_nothing(saga, buyer):
    """Deadlines count from publishing: while nothing is published, no step is late and nothing is re-sent."""
    for name in _relays(saga):
        saga.stop(name)
    orders = [place(buyer, [("SKU-A", 1)]) for _ in range(3)]
    timeout = float(saga.env["SAGA_STEP_TIMEOUT_SECONDS"])
    # The outage itself: several step deadlines long, with the sweeper running all along.
    time.sleep(timeout * 3)
    assert not SagaStepLog.objects.filter(outcome="resent").exists()
    saga.standard()

    finals = [wait_final(buyer, order["id"], saga) for order in orders]

    assert [final["status"] for final in finals] == ["CONFIRMED"] * 3, finals
    resent = list(SagaStepLog.objects.filter(outcome="resent").values_list("step_name", flat=True))
    assert resent == [], resent
    assert_audit_clean(saga)


def test_poison_messages_are_dead_lettered_and_the_shop_goes_on(saga, buyer):
    from shop.celery import app

    unknown_saga = {"id": str(uuid.uuid4()), "command_id": str(uuid.uuid4()), "saga_id": str(uuid.uuid4()),
                    "saga": "order", "step": 1, "direction": "action", "outcome": "ok", "result": {},
                    "error": None}
    with app.producer_or_acquire() as producer:
        app.send_task("sagas.reply", args=["not a reply"], queue="sagas", producer=producer)
        app.send_task("sagas.reply", args=[unknown_saga], queue="sagas", producer=producer)
        app.send_task("inventory.reserve_stock", args=[{"id": "no saga here"}], queue="inventory", producer=producer)

    order = place(buyer, [("SKU-A", 1)])
    assert wait_final(buyer, order["id"], saga)["status"] == "CONFIRMED"

    def letters() -> list[tuple[str, str]]:
        return sorted((letter.consumer, letter.task) for alias in {service_alias("orders"), service_alias("inventory"),
                                                                   "default"}
                      for letter in DeadLetter.objects.using(alias).all())

    assert wait_until(lambda: len(letters()) == 3, timeout=30), (letters(), saga.logs())
    assert letters() == [("inventory", "inventory.reserve_stock"), ("orchestrator", "sagas.reply"),
                         ("orchestrator", "sagas.reply")]
    assert all(letter.error.startswith("poison") for alias in {service_alias("orders"), service_alias("inventory")}
               for letter in DeadLetter.objects.using(alias).all())
    assert Order.objects.filter(status=Order.Status.PENDING).count() == 0
    assert_audit_clean(saga)


def test_a_dead_letter_is_re_driven_through_the_outbox_once(no_processes):
    alias = service_alias("inventory")
    message_id = uuid.uuid4()
    letter = DeadLetter.objects.using(alias).create(
        consumer="inventory", task="inventory.reserve_stock", queue="inventory", message_id=str(message_id),
        payload={"id": str(message_id)}, error="poison: fixed since", deliveries=3)

    assert dead_letter_redrive(letter_id=letter.pk, using=alias)
    assert not dead_letter_redrive(letter_id=letter.pk, using=alias)

    sent = list(OutboxMessage.objects.using(alias).values_list("task", "queue", "message_id", "payload"))
    assert sent == [("inventory.reserve_stock", "inventory", message_id, {"id": str(message_id)})], sent
    letter.refresh_from_db(using=alias)
    assert letter.redriven_at is not None
