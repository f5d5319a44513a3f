"""ORDER_FLOW=choreography, end to end through real Celery workers, relays and the choreography sweeper.

No coordinator: each service reacts to the event of the step before its own (sagas.choreography, derived
from orders/steps.py), every hop a message through the outbox, the relay and the broker.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from django.urls import reverse

from inventory.models import Product, Reservation
from operations.audit import run_audit
from orders.choreography import ORDER_CHOREOGRAPHY
from orders.flows import choreography as choreography_flow
from orders.models import Order
from payments.models import Payment, Wallet
from sagas.choreography import trace
from sagas.models import SagaInstance
from sagas.processes import COMMAND_QUEUES
from sagas.tests import receipt
from sagas.tests.conftest import Stack
from sagas.tests.test_add_a_step import command as receipt_command
from shipping.models import Shipment
from shop.testing import all_at_once, order_body, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.choreography,
              pytest.mark.django_db(transaction=True, databases="__all__")]

FINAL_TIMEOUT = 90
PYTHON = sys.executable
SWEEPER = "choreography-sweeper"
DEADLINE_SECONDS = 4
VISIBILITY_TIMEOUT = 5


def sweeper_command(*include: str) -> list[str]:
    return [PYTHON, "manage.py", "choreography_sweeper", *(f"--include={module}" for module in include)]


@pytest.fixture
def choreo(saga: Stack, settings) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """The saga stack's workers and relays, ORDER_FLOW=choreography here, and the choreography sweeper."""
    settings.ORDER_FLOW = "choreography"
    saga.start(SWEEPER, sweeper_command(), CHOREOGRAPHY_DEADLINE_SECONDS=str(DEADLINE_SECONDS),
               CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS="0.2")
    yield saga
    saga.stop(SWEEPER)


@pytest.fixture
def world(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=100_000)
    return {"customer": customer, "client": client_for(customer)}


def place(client, lines, *, key: str | None = None, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/orders", order_body(lines, **kwargs), format="json",
                           HTTP_IDEMPOTENCY_KEY=key or uuid.uuid4().hex)
    assert response.status_code == 202, (response.status_code, response.content)
    body = response.json()
    assert response["Location"] == f"/api/v1/orders/{body['id']}", response["Location"]
    return body


def wait_final(order_id: int, stack: Stack) -> Order:
    def final() -> bool:
        return Order.objects.filter(pk=order_id).exclude(status=Order.Status.PENDING).exists()

    assert wait_until(final, timeout=FINAL_TIMEOUT), f"order {order_id} not final: {events(order_id)}\n{stack.logs()}"
    # The order is final with the event that made it so; wait for the rest of the trace (none should follow).
    assert stack.wait_idle() == "", stack.logs()
    return Order.objects.get(pk=order_id)


def events(order_id: int, choreography=ORDER_CHOREOGRAPHY) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(entry["event"], entry["service"]) for entry in trace(choreography=choreography, flow_id=str(order_id))]


def assert_audit_clean(stack: Stack) -> None:
    assert stack.wait_idle() == "", stack.logs()
    failed = [check.line() for check in run_audit() if not check.ok]
    assert failed == [], f"{failed}\n{stack.logs()}"


def test_the_chain_is_derived_from_the_steps():
    assert ORDER_CHOREOGRAPHY.table() == [
        ("OrderPlaced", "inventory", "reserve_stock action", "StockReserved | StockRejected"),
        ("StockReserved", "payments", "charge_payment action", "PaymentCaptured | PaymentDeclined"),
        ("PaymentCaptured", "shipping", "schedule_shipment action", "ShipmentScheduled | ShipmentRejected"),
        ("ShipmentScheduled", "orders", "confirm_order action", "OrderConfirmed | OrderConfirmFailed"),
        ("StockRejected", "orders", "create_order compensation", "OrderFailed"),
        ("StockReleased", "orders", "create_order compensation", "OrderFailed"),
        ("PaymentDeclined", "inventory", "reserve_stock compensation", "StockReleased"),
        ("PaymentRefunded", "inventory", "reserve_stock compensation", "StockReleased"),
        ("ShipmentRejected", "payments", "charge_payment compensation", "PaymentRefunded"),
        ("ShipmentCancelled", "payments", "charge_payment compensation", "PaymentRefunded"),
        ("OrderConfirmFailed", "shipping", "schedule_shipment compensation", "ShipmentCancelled"),
        ("OrderTimedOut", "shipping", "schedule_shipment compensation", "ShipmentCancelled"),
    ]
    assert set(ORDER_CHOREOGRAPHY.reacts_to("inventory")) == {"OrderPlaced", "PaymentDeclined", "PaymentRefunded"}
    assert ORDER_CHOREOGRAPHY.emits("inventory") == {"StockReserved", "StockRejected", "StockReleased"}
    assert ORDER_CHOREOGRAPHY.emits("orders") == {"OrderPlaced", "OrderConfirmed", "OrderConfirmFailed",
                                                  "OrderFailed"}
    # A step added to the list is a link of the chain: the receipt reacts to the payment, shipping to it.
    with_receipt = RECEIPT_CHOREOGRAPHY.table()
    assert ("PaymentCaptured", "payments", "email_receipt action", "EmailReceiptDone | EmailReceiptFailed") \
        in with_receipt
    assert ("EmailReceiptDone", "shipping", "schedule_shipment action", "ShipmentScheduled | ShipmentRejected") \
        in with_receipt
    assert ("ShipmentRejected", "payments", "email_receipt compensation", "EmailReceiptUndone") in with_receipt
    assert ("EmailReceiptUndone", "payments", "charge_payment compensation", "PaymentRefunded") in with_receipt


def test_happy_path_confirms_through_events(choreo, world):
    order = place(world["client"], [("SKU-A", 2)])

    final = wait_final(order["id"], choreo)

    assert final.status == Order.Status.CONFIRMED
    assert events(order["id"]) == [("OrderPlaced", "orders"), ("StockReserved", "inventory"),
                                   ("PaymentCaptured", "payments"), ("ShipmentScheduled", "shipping"),
                                   ("OrderConfirmed", "orders")]
    # Each event reached its one reacting service exactly once in effect, and no coordinator ran.
    assert [entry["received_by"] for entry in trace(choreography=ORDER_CHOREOGRAPHY, flow_id=str(order["id"]))][:4] \
        == [[("inventory", 1)], [("payments", 1)], [("shipping", 1)], [("orders", 1)]]
    assert not SagaInstance.objects.exists()
    assert Product.objects.get(sku="SKU-A").on_hand == 3
    assert Wallet.objects.get(customer_id=world["customer"].pk).balance_cents == 100_000 - 2000
    assert Shipment.objects.get(order_id=order["id"]).status == Shipment.Status.SCHEDULED
    assert_audit_clean(choreo)


@pytest.mark.parametrize(
    ("kwargs", "quantity", "balance", "reason", "expected"),
    [
        ({}, 6, 100_000, "out_of_stock", ["OrderPlaced", "StockRejected", "OrderFailed"]),
        ({"token": "tok_decline"}, 1, 100_000, "payment_declined",
         ["OrderPlaced", "StockReserved", "PaymentDeclined", "StockReleased", "OrderFailed"]),
        ({}, 1, 500, "insufficient_funds",
         ["OrderPlaced", "StockReserved", "PaymentDeclined", "StockReleased", "OrderFailed"]),
        ({"country": "XX"}, 1, 100_000, "undeliverable",
         ["OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentRejected", "PaymentRefunded",
          "StockReleased", "OrderFailed"]),
        ({"token": "tok_timeout"}, 1, 100_000, "payment_unavailable",
         ["OrderPlaced", "StockReserved", "PaymentDeclined", "StockReleased", "OrderFailed"]),
    ],
    ids=["out-of-stock", "declined", "insufficient-funds", "undeliverable", "gateway-timeouts"],
)
def test_a_failure_at_each_step_is_undone_in_reverse_by_events(choreo, make_product, make_customer, client_for,
                                                              kwargs, quantity, balance, reason, expected):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=balance)

    order = place(client_for(customer), [("SKU-A", quantity)], **kwargs)
    final = wait_final(order["id"], choreo)

    assert (final.status, final.failure_reason) == (Order.Status.FAILED, reason), final.failure_detail
    assert [event for event, _ in events(order["id"])] == expected
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == balance
    mine = {"order_id": order["id"]}
    assert not Reservation.objects.filter(**mine, status=Reservation.Status.HELD).exists()
    assert not Payment.objects.filter(**mine, status=Payment.Status.CHARGED).exists()
    assert not Shipment.objects.filter(**mine, status=Shipment.Status.SCHEDULED).exists()
    assert_audit_clean(choreo)


def test_concurrent_orders_on_one_sku_never_oversell(choreo, make_product, make_customer, client_for):
    make_product(sku="HOT", stock=3, price_cents=100)
    clients = [client_for(make_customer(balance_cents=10_000)) for _ in range(8)]

    answers = all_at_once([lambda c=c: place(c, [("HOT", 1)]) for c in clients])
    ids = [answer["id"] for answer in answers]
    for order_id in ids:
        wait_final(order_id, choreo)

    statuses = sorted(Order.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert statuses == [Order.Status.CONFIRMED] * 3 + [Order.Status.FAILED] * 5
    assert Product.objects.get(sku="HOT").on_hand == 0
    assert set(Order.objects.filter(status=Order.Status.FAILED).values_list("failure_reason", flat=True)) == \
        {"out_of_stock"}
    assert_audit_clean(choreo)


def test_the_idempotency_key_contract_holds(choreo, world):
    client, key = world["client"], uuid.uuid4().hex
    first = place(client, [("SKU-A", 1)], key=key)
    again = place(client, [("SKU-A", 1)], key=key)
    other = client.post("/api/v1/orders", order_body([("SKU-A", 2)]), format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert again["id"] == first["id"]
    assert other.status_code == 422, other.content
    assert wait_final(first["id"], choreo).status == Order.Status.CONFIRMED
    assert Order.objects.count() == 1
    assert place(client, [("SKU-A", 1)], key=key)["id"] == first["id"]  # final: still the same order
    assert_audit_clean(choreo)


def test_an_order_gone_quiet_is_timed_out_and_undone_by_events(choreo, world, admin_client):
    """The shipping queue unconsumed: PaymentCaptured waits. Past the deadline the sweeper fences the
    confirmation and emits OrderTimedOut; once shipping runs again, its late shipment is cancelled, the
    payment refunded, the stock released, and the order FAILED `timed_out`."""
    choreo.stop("worker")
    choreo.worker("worker-no-shipping", queues=tuple(q for q in COMMAND_QUEUES if q != "shipping"))
    order = place(world["client"], [("SKU-A", 1)])

    def timed_out() -> bool:
        return "OrderTimedOut" in [event for event, _ in events(order["id"])]

    assert wait_until(timed_out, timeout=FINAL_TIMEOUT), f"{events(order['id'])}\n{choreo.logs()}"
    choreo.stop("worker-no-shipping")
    choreo.worker()
    final = wait_final(order["id"], choreo)

    assert (final.status, final.failure_reason) == (Order.Status.FAILED, "timed_out")
    assert "CHOREOGRAPHY_DEADLINE_SECONDS" in final.failure_detail
    seen = [event for event, _ in events(order["id"])]
    assert seen[:3] == ["OrderPlaced", "StockReserved", "PaymentCaptured"]
    assert seen[-4:] == ["ShipmentCancelled", "PaymentRefunded", "StockReleased", "OrderFailed"]
    assert "OrderConfirmed" not in seen  # a late ShipmentScheduled found the confirmation fenced
    assert not Shipment.objects.filter(order_id=order["id"], status=Shipment.Status.SCHEDULED).exists()
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert Wallet.objects.get(customer_id=world["customer"].pk).balance_cents == 100_000
    # The admin shows why: the order's trace, the sweeper's event among the others, each with its deliveries.
    page = admin_client.get(reverse("admin:orders_order_change", args=[order["id"]])).content.decode()
    assert "timed_out" in page and "CHOREOGRAPHY_DEADLINE_SECONDS" in page
    assert page.index("PaymentCaptured") < page.index("OrderTimedOut") < page.index("ShipmentCancelled")
    assert "inventory (1)" in page
    assert_audit_clean(choreo)


def test_sigkill_of_a_worker_and_of_the_relay_still_ends_every_order(choreo, world, make_product):
    make_product(sku="SKU-B", stock=100, price_cents=100)
    # Workers away for seconds are not a stuck order: the sweeper's deadline is longer than the outage here.
    choreo.start(SWEEPER, sweeper_command(), CHOREOGRAPHY_DEADLINE_SECONDS="60")
    ids = [place(world["client"], [("SKU-B", 1)])["id"] for _ in range(6)]
    choreo.kill("worker")
    relays = [name for name in list(choreo.procs) if name.startswith("relay-")]
    for relay in relays:
        choreo.stop(relay, signal.SIGKILL)
    ids += [place(world["client"], [("SKU-B", 1)])["id"] for _ in range(4)]
    choreo.relays()
    # What the killed worker held is unacknowledged in the broker; a worker gives such messages back as it
    # starts once they are older than its visibility timeout.
    time.sleep(VISIBILITY_TIMEOUT + 1)
    choreo.worker(CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))

    # Nothing was lost: every order goes through, each charged once.
    outcomes = [wait_final(order_id, choreo).status for order_id in ids]
    assert outcomes == [Order.Status.CONFIRMED] * 10, outcomes
    assert Product.objects.get(sku="SKU-B").on_hand == 90
    assert sorted(Payment.objects.filter(status=Payment.Status.CHARGED).values_list("order_id", flat=True)) == ids
    assert_audit_clean(choreo)


RECEIPT_CHOREOGRAPHY = receipt.CHOREOGRAPHY


@pytest.fixture
def receipt_table() -> Iterator[None]:
    from django.conf import settings as django_settings

    for alias in django_settings.DATABASES:
        receipt.table_create(alias)
    yield
    for alias in django_settings.DATABASES:
        receipt.table_drop(alias)


def test_an_added_step_runs_once_per_order_with_every_message_delivered_twice(receipt_table, choreo, world):
    choreo.worker(include=(receipt.MODULE,))
    for relay in [name for name in list(choreo.procs) if name.startswith("relay-")]:
        choreo.stop(relay)
    choreo.relays(OUTBOX_RELAY_FAULT="publish-twice")
    confirmed = choreography_flow.place_order(receipt_command(world["customer"]), choreography=RECEIPT_CHOREOGRAPHY)
    undeliverable = choreography_flow.place_order(receipt_command(world["customer"], country="XX"),
                                                  choreography=RECEIPT_CHOREOGRAPHY)
    assert wait_final(confirmed.pk, choreo).status == Order.Status.CONFIRMED
    assert wait_final(undeliverable.pk, choreo).failure_reason == "undeliverable"

    reference = Payment.objects.get(order_id=confirmed.pk).gateway_reference
    assert receipt.receipts(confirmed.pk) == [(reference, "sent")]
    assert [event for event, _ in events(confirmed.pk, RECEIPT_CHOREOGRAPHY)] == [
        "OrderPlaced", "StockReserved", "PaymentCaptured", "EmailReceiptDone", "ShipmentScheduled", "OrderConfirmed"]
    assert [event for event, _ in events(undeliverable.pk, RECEIPT_CHOREOGRAPHY)] == [
        "OrderPlaced", "StockReserved", "PaymentCaptured", "EmailReceiptDone", "ShipmentRejected",
        "EmailReceiptUndone", "PaymentRefunded", "StockReleased", "OrderFailed"]
    assert receipt.receipts(undeliverable.pk)[0][1] == "retracted"
    # Every message came twice; the inbox let the second change nothing.
    deliveries = [entry["deliveries"] for entry in trace(choreography=RECEIPT_CHOREOGRAPHY,
                                                         flow_id=str(confirmed.pk))][:-1]
    assert deliveries == [2] * len(deliveries), deliveries
    assert choreo.running("worker"), choreo.logs()
