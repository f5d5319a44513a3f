"""The order flow as an orchestrated saga, end to end through real Celery workers, relay and sweeper."""

from __future__ import annotations

import functools
from collections import Counter

import pytest

from inventory.models import Product, Reservation
from orders.models import Order
from payments.models import Payment, Wallet
from sagas.models import SagaInstance, SagaStepLog
from sagas.testing import inbox_count, outbox
from shipping.models import Shipment
from shop.audit import run_audit
from shop.testing import all_at_once, order_body, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]

FINAL_TIMEOUT = 45


def place(client, lines, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/orders", order_body(lines, **kwargs), format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "PENDING"
    assert response["Location"] == body["url"] == f"/api/v1/orders/{body['id']}"
    return body


def wait_final(client, order_id: int, stack) -> dict:  # type: ignore[no-untyped-def]
    def final() -> bool:
        # The saga finishes just after its last step made the order final.
        return Order.objects.filter(pk=order_id).exclude(status=Order.Status.PENDING).exists() and \
            saga_of(order_id).state not in SagaInstance.ACTIVE

    assert wait_until(final, timeout=FINAL_TIMEOUT), stack.logs()
    return client.get(f"/api/v1/orders/{order_id}").json()


def saga_of(order_id: int) -> SagaInstance:
    return next(s for s in SagaInstance.objects.all() if s.data["order_id"] == order_id)


def timeline(order_id: int) -> list[tuple[str, str, str]]:
    """(step, direction, outcome) of every reply, in the order the orchestrator handled them."""
    saga = saga_of(order_id)
    return [(log.step_name, log.direction, log.outcome)
            for log in SagaStepLog.objects.filter(saga=saga).order_by("id") if log.outcome != "resent"]


def assert_audit_clean(stack) -> None:  # type: ignore[no-untyped-def]
    assert wait_until(lambda: not outbox(published_at__isnull=True), timeout=10)
    failed = [check.line() for check in run_audit() if not check.ok]
    assert failed == [], stack.logs()


@pytest.fixture
def shop_world(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    make_product(sku="SKU-B", stock=5, price_cents=250)
    customer = make_customer(balance_cents=100_000)
    return {"customer": customer, "client": client_for(customer)}


ACTIONS_OK = [
    ("create_order", "action", "ok"),
    ("reserve_stock", "action", "ok"),
    ("charge_payment", "action", "ok"),
    ("schedule_shipment", "action", "ok"),
    ("confirm_order", "action", "ok"),
]


def test_happy_path_confirms(saga, shop_world):
    client = shop_world["client"]
    order = place(client, [("SKU-A", 2), ("SKU-B", 1)])

    final = wait_final(client, order["id"], saga)

    assert final["status"] == "CONFIRMED"
    assert timeline(order["id"]) == ACTIONS_OK
    assert saga_of(order["id"]).state == SagaInstance.State.COMPLETED
    assert Product.objects.get(sku="SKU-A").on_hand == 3
    assert Wallet.objects.get(customer_id=shop_world["customer"].pk).balance_cents == 100_000 - 2250
    assert Shipment.objects.get(order_id=order["id"]).status == Shipment.Status.SCHEDULED
    assert_audit_clean(saga)


@pytest.mark.parametrize(
    ("kwargs", "quantity", "balance", "reason", "expected"),
    [
        ({}, 6, 100_000, "out_of_stock", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "business"),
            ("create_order", "compensation", "ok"),
        ]),
        ({"token": "tok_decline"}, 1, 100_000, "payment_declined", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "ok"),
            ("charge_payment", "action", "business"),
            ("reserve_stock", "compensation", "ok"),
            ("create_order", "compensation", "ok"),
        ]),
        ({}, 1, 500, "insufficient_funds", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "ok"),
            ("charge_payment", "action", "business"),
            ("reserve_stock", "compensation", "ok"),
            ("create_order", "compensation", "ok"),
        ]),
        ({"country": "XX"}, 1, 100_000, "undeliverable", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "ok"),
            ("charge_payment", "action", "ok"),
            ("schedule_shipment", "action", "business"),
            ("charge_payment", "compensation", "ok"),
            ("reserve_stock", "compensation", "ok"),
            ("create_order", "compensation", "ok"),
        ]),
    ],
    ids=["out-of-stock", "declined", "insufficient-funds", "undeliverable"],
)
def test_a_failure_at_each_step_compensates_in_reverse(saga, make_product, make_customer, client_for, kwargs,
                                                        quantity, balance, reason, expected):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=balance)
    client = client_for(customer)

    order = place(client, [("SKU-A", quantity)], **kwargs)
    final = wait_final(client, order["id"], saga)

    assert final["status"] == "FAILED"
    assert final["failure_reason"] == reason
    assert timeline(order["id"]) == expected
    assert saga_of(order["id"]).state == SagaInstance.State.COMPENSATED
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == balance
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists()
    assert not Payment.objects.filter(status=Payment.Status.CHARGED).exists()
    assert not Shipment.objects.filter(status=Shipment.Status.SCHEDULED).exists()
    assert_audit_clean(saga)


def test_flaky_gateway_is_retried_then_pays(saga, shop_world):
    client = shop_world["client"]
    order = place(client, [("SKU-A", 1)], token="tok_flaky")

    assert wait_final(client, order["id"], saga)["status"] == "CONFIRMED"
    charges = [entry for entry in timeline(order["id"]) if entry[0] == "charge_payment"]
    assert charges == [("charge_payment", "action", "transient")] * 2 + [("charge_payment", "action", "ok")]
    attempts = list(SagaStepLog.objects.filter(step_name="charge_payment").order_by("id")
                    .values_list("attempt", flat=True))
    assert attempts == [1, 2, 3]
    assert Payment.objects.filter(order_id=order["id"]).count() == 1
    assert_audit_clean(saga)


def test_gateway_timeouts_exhaust_retries_then_compensate(saga, shop_world):
    client = shop_world["client"]
    order = place(client, [("SKU-A", 1)], token="tok_timeout")

    final = wait_final(client, order["id"], saga)

    assert final["status"] == "FAILED"
    assert final["failure_reason"] == "payment_unavailable"
    assert timeline(order["id"]) == [
        ("create_order", "action", "ok"),
        ("reserve_stock", "action", "ok"),
        *[("charge_payment", "action", "transient")] * 4,
        # The last attempt's outcome is unknown to the orchestrator, so its compensation runs too.
        ("charge_payment", "compensation", "ok"),
        ("reserve_stock", "compensation", "ok"),
        ("create_order", "compensation", "ok"),
    ]
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert_audit_clean(saga)


def test_every_message_delivered_twice_changes_nothing_twice(saga, shop_world, make_customer, client_for):
    for relay in [name for name in list(saga.procs) if name.startswith("relay-")]:
        saga.stop(relay)
    saga.relays(OUTBOX_RELAY_FAULT="publish-twice")
    client = shop_world["client"]
    ok = place(client, [("SKU-A", 1)])
    undeliverable = place(client, [("SKU-B", 1)], country="XX")

    assert wait_final(client, ok["id"], saga)["status"] == "CONFIRMED"
    assert wait_final(client, undeliverable["id"], saga)["status"] == "FAILED"

    assert Reservation.objects.count() == 2
    assert Payment.objects.count() == 2
    assert Shipment.objects.count() == 1
    assert Payment.objects.get(order_id=undeliverable["id"]).status == Payment.Status.REFUNDED
    assert Product.objects.get(sku="SKU-A").on_hand == 4
    assert Product.objects.get(sku="SKU-B").on_hand == 5
    # Every command arrived twice: the second copy found the inbox row and only re-sent the stored reply.
    # (The sweeper may re-send a slow step too: more copies, never fewer.)
    # Steps of the orders service run inside the orchestrator's transaction: no message, nothing to deliver.
    local = {"create_order", "confirm_order"}
    replies = sum(1 for order in (ok, undeliverable) for step, _, _ in timeline(order["id"]) if step not in local)

    def every_reply_sent_twice() -> bool:
        copies = Counter(message.message_id for message in outbox(task="sagas.reply"))
        return len(copies) == replies and min(copies.values()) >= 2

    assert wait_until(every_reply_sent_twice, timeout=15)
    assert inbox_count() == 2 * replies  # one row per command and per reply, never two
    assert_audit_clean(saga)


def test_hot_sku_sells_exactly_the_stock(saga, make_product, make_customer, client_for):
    make_product(sku="SKU-HOT", stock=10, price_cents=500)
    customers = [make_customer(balance_cents=100_000) for _ in range(8)]
    clients = [client_for(customers[i % len(customers)]) for i in range(40)]
    responses = all_at_once([
        functools.partial(client.post, "/api/v1/orders", order_body([("SKU-HOT", 1)]), format="json")
        for client in clients
    ])
    ids = [response.json()["id"] if response.status_code == 202 else -response.status_code for response in responses]

    assert len(ids) == 40 and all(i > 0 for i in ids)
    assert wait_until(lambda: not SagaInstance.objects.filter(state__in=SagaInstance.ACTIVE).exists(), timeout=90), \
        saga.logs()
    assert Order.objects.filter(status=Order.Status.CONFIRMED).count() == 10
    assert set(Order.objects.filter(status=Order.Status.FAILED).values_list("failure_reason", flat=True)) == {
        "out_of_stock"}
    assert Order.objects.filter(status=Order.Status.FAILED).count() == 30
    assert Product.objects.get(sku="SKU-HOT").on_hand == 0
    assert_audit_clean(saga)


def test_nothing_is_published_for_a_rejected_request(saga, shop_world):
    response = shop_world["client"].post("/api/v1/orders", order_body([("SKU-NOPE", 1)]), format="json")
    assert response.status_code == 400
    assert Order.objects.count() == 0
    assert outbox() == []
