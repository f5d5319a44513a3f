"""A step added to the order's steps (sagas/tests/receipt.py: e-mail a receipt after the payment) runs in every
mode: once per confirmed order, and undone when a later step fails.

Given the order's steps with the receipt step inserted, when orders are placed through each coordinator
(atomic in-process; saga through real Celery workers, relays that publish every message twice, and the
sweeper), expect exactly one receipt
for each confirmed order, carrying the payment's reference (the previous step's result), and for an order
whose shipment fails: none left in atomic mode (rolled back with everything else), a retracted one in saga
mode (compensated in reverse order, between the shipment and the payment).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings

from orders.flows import atomic
from orders.flows import saga as saga_flow
from orders.models import Order
from orders.services import PlaceOrder
from payments.models import Payment
from sagas.models import SagaInstance, SagaStepLog
from sagas.tests import receipt
from shop.errors import Undeliverable
from shop.testing import ADDRESS, wait_until

FINAL_TIMEOUT = 90


@pytest.fixture
def receipt_table() -> Iterator[None]:
    # Before the saga fixture (tests ask for it first), so it is dropped after the stack went idle.
    for alias in django_settings.DATABASES:
        receipt.table_create(alias)
    yield
    for alias in django_settings.DATABASES:
        receipt.table_drop(alias)


@pytest.fixture
def customer(make_product, make_customer):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    return make_customer(balance_cents=100_000)


def command(customer, *, country: str = "GB") -> PlaceOrder:  # type: ignore[no-untyped-def]
    return PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                      shipping_address={**ADDRESS, "country": country})


def reference(order_id: int) -> str:
    return Payment.objects.get(order_id=order_id).gateway_reference


@pytest.mark.django_db
def test_the_atomic_flow_runs_the_added_step(receipt_table, settings, customer):
    settings.ORDER_FLOW = "atomic"

    confirmed = atomic.place_order(command(customer), steps=receipt.STEPS)
    with pytest.raises(Undeliverable):
        atomic.place_order(command(customer, country="XX"), steps=receipt.STEPS)
    without_the_step = atomic.place_order(command(customer))

    assert confirmed.status == Order.Status.CONFIRMED
    assert receipt.receipts(confirmed.pk) == [(reference(confirmed.pk), "sent")]
    # The failed order rolled back whole, its receipt with it; the standard steps send none.
    assert Order.objects.count() == 2
    assert receipt.receipts(without_the_step.pk) == []


def timeline(saga: SagaInstance) -> list[tuple[str, str, str]]:
    return [(log.step_name, log.direction, log.outcome)
            for log in SagaStepLog.objects.filter(saga=saga).order_by("id") if log.outcome not in ("resent", "stale")]


@pytest.mark.saga
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_saga_runs_the_added_step(receipt_table, saga, customer):
    # Every process that handles these sagas must know their definition: the orchestrator and the
    # participants (the worker) and the sweeper.
    saga.worker(include=(receipt.MODULE,))
    saga.sweeper(include=(receipt.MODULE,))
    # Every message delivered twice: the receipt is still sent once (the engine's inbox, not the function).
    for relay in [name for name in list(saga.procs) if name.startswith("relay-")]:
        saga.stop(relay)
    saga.relays(OUTBOX_RELAY_FAULT="publish-twice")

    confirmed = saga_flow.place_order(command(customer), definition=receipt.SAGA)
    undeliverable = saga_flow.place_order(command(customer, country="XX"), definition=receipt.SAGA)

    def final() -> bool:
        return not SagaInstance.objects.filter(saga_type=receipt.SAGA.name, state__in=SagaInstance.ACTIVE).exists() \
            and not Order.objects.filter(status=Order.Status.PENDING).exists()

    assert wait_until(final, timeout=FINAL_TIMEOUT), saga.logs()
    assert saga.wait_idle() == "", saga.logs()  # late duplicates handled too, before counting
    sagas = {s.data["order_id"]: s for s in SagaInstance.objects.filter(saga_type=receipt.SAGA.name)}
    assert Order.objects.get(pk=confirmed.pk).status == Order.Status.CONFIRMED
    assert timeline(sagas[confirmed.pk]) == [
        ("create_order", "action", "ok"),
        ("reserve_stock", "action", "ok"),
        ("charge_payment", "action", "ok"),
        ("email_receipt", "action", "ok"),
        ("schedule_shipment", "action", "ok"),
        ("confirm_order", "action", "ok"),
    ]
    assert receipt.receipts(confirmed.pk) == [(reference(confirmed.pk), "sent")]

    failed = Order.objects.get(pk=undeliverable.pk)
    assert (failed.status, failed.failure_reason) == (Order.Status.FAILED, "undeliverable")
    assert timeline(sagas[undeliverable.pk]) == [
        ("create_order", "action", "ok"),
        ("reserve_stock", "action", "ok"),
        ("charge_payment", "action", "ok"),
        ("email_receipt", "action", "ok"),
        ("schedule_shipment", "action", "business"),
        ("email_receipt", "compensation", "ok"),
        ("charge_payment", "compensation", "ok"),
        ("reserve_stock", "compensation", "ok"),
        ("create_order", "compensation", "ok"),
    ]
    assert receipt.receipts(undeliverable.pk) == [(reference(undeliverable.pk), "retracted")]
    # The worker and the sweeper imported the definition and kept running.
    assert saga.running("worker") and saga.running("sweeper"), saga.logs()
