"""The order flow in ORDER_FLOW=atomic: one transaction, all or nothing."""

from __future__ import annotations

import functools

import pytest

from inventory.models import Product, Reservation
from operations.audit import run_audit
from orders.flows import place_order
from orders.models import Order
from orders.services import PlaceOrder
from payments.models import Payment, Wallet
from shipping.models import Shipment
from shop.testing import ADDRESS, all_at_once, order_body

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _atomic(settings):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "atomic"


def _audit_clean() -> None:
    failed = [check.line() for check in run_audit() if not check.ok]
    assert failed == []


def test_happy_path_confirms_and_moves_stock_and_money(make_product, make_customer, client_for):
    a = make_product(sku="SKU-A", stock=5, price_cents=1250)
    b = make_product(sku="SKU-B", stock=5, price_cents=300)
    customer = make_customer(balance_cents=10_000)

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-B", 1), ("SKU-A", 2)]),
                                         format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "CONFIRMED"
    assert body["total_cents"] == 2 * 1250 + 300
    assert [line["sku"] for line in body["lines"]] == ["SKU-A", "SKU-B"]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.on_hand, b.on_hand) == (3, 4)
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == 10_000 - 2800
    assert Payment.objects.get(order_id=body["id"]).amount_cents == 2800
    assert Shipment.objects.get(order_id=body["id"]).status == Shipment.Status.SCHEDULED
    assert Reservation.objects.get(order_id=body["id"]).status == Reservation.Status.HELD
    _audit_clean()


@pytest.mark.parametrize(
    ("token", "country", "quantity", "balance", "status", "code"),
    [
        ("tok_ok", "GB", 6, 100_000, 409, "out-of-stock"),
        ("tok_decline", "GB", 1, 100_000, 402, "payment-declined"),
        ("tok_ok", "GB", 1, 999, 402, "insufficient-funds"),
        ("tok_ok", "XX", 1, 100_000, 422, "undeliverable"),
        ("tok_timeout", "GB", 1, 100_000, 503, "payment-unavailable"),
    ],
    ids=["out-of-stock", "declined", "insufficient-funds", "undeliverable", "gateway-down"],
)
def test_a_failure_at_any_step_leaves_no_trace(make_product, make_customer, client_for, token, country,
                                               quantity, balance, status, code):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=balance)

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", quantity)], token=token,
                                                                      country=country), format="json")

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{code}"
    assert Order.objects.count() == 0
    assert Reservation.objects.count() == Payment.objects.count() == Shipment.objects.count() == 0
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == balance
    _audit_clean()


def test_flaky_gateway_is_retried_and_pays_once(make_product, make_customer, client_for):
    make_product(sku="SKU-A", stock=5)
    customer = make_customer()

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 1)], token="tok_flaky"),
                                         format="json")

    assert response.status_code == 201, response.content
    assert Payment.objects.filter(order_id=response.json()["id"]).count() == 1
    _audit_clean()


@pytest.mark.django_db(transaction=True)  # as in production: no test savepoint around the durable block
def test_placement_queries_are_pinned(make_product, make_customer, django_assert_num_queries):
    make_product(sku="SKU-A", stock=5)
    make_product(sku="SKU-B", stock=5)
    customer = make_customer()
    command = PlaceOrder(customer_id=customer.pk, lines=[("SKU-B", 1), ("SKU-A", 1)], payment_token="tok_ok",
                         shipping_address=ADDRESS)
    # prices 1, once for the amount authorized and the order (the API passes the ones it validated with
    # instead); BEGIN; then one statement per step: order with its lines; every SKU's stock with the
    # reservation; wallet with payment; shipment; confirm; COMMIT. No key lookups: every key is built from the
    # order created in the same transaction.
    with django_assert_num_queries(8):
        order = place_order(command)
    assert order.status == Order.Status.CONFIRMED


@pytest.mark.django_db(transaction=True)
def test_hot_sku_under_concurrency_sells_exactly_the_stock(make_product, make_customer, client_for):
    make_product(sku="SKU-HOT", stock=10, price_cents=500)
    customers = [make_customer(balance_cents=100_000) for _ in range(8)]
    clients = [client_for(customers[i % len(customers)]) for i in range(40)]

    responses = all_at_once([
        functools.partial(client.post, "/api/v1/orders", order_body([("SKU-HOT", 1)]), format="json")
        for client in clients
    ])

    statuses = [response.status_code for response in responses]
    assert sorted(statuses) == [201] * 10 + [409] * 30
    assert Product.objects.get(sku="SKU-HOT").on_hand == 0
    assert Order.objects.filter(status=Order.Status.CONFIRMED).count() == 10
    _audit_clean()
