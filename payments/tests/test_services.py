"""Payments through the gateway: the saga's idempotent charge and refund, and the atomic flow's hold before
its transaction, captured after the commit or voided when the order fails."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from idempotency.models import IdempotencyKey
from idempotency.services import key_claim, request_fingerprint
from orders.flows.atomic import request_key
from orders.models import Order
from orders.services import PlaceOrder
from orders.steps import authorization_key
from payments import gateway
from payments.models import Payment, Wallet
from payments.services import payment_authorize, payment_charge, payment_refund
from shop.errors import InsufficientFunds, PaymentDeclined
from shop.testing import order_body

pytestmark = pytest.mark.django_db


def _balance(customer) -> int:  # type: ignore[no-untyped-def]
    return Wallet.objects.get(customer_id=customer.pk).balance_cents


def test_a_charge_is_idempotent_by_key_and_captured_once_committed(make_customer,
                                                                   django_capture_on_commit_callbacks):
    customer = make_customer(balance_cents=10_000)

    with django_capture_on_commit_callbacks(execute=False) as on_commit:
        first = payment_charge(order_id=1, customer_id=customer.pk, amount_cents=2500, token="tok_ok",
                               key="saga-1:charge")
    assert gateway.state(first.gateway_reference) == gateway.AUTHORIZED, "captured only after the commit"
    for callback in on_commit:
        callback()
    again = payment_charge(order_id=1, customer_id=customer.pk, amount_cents=2500, token="tok_ok", key="saga-1:charge")

    assert again.pk == first.pk
    assert Payment.objects.count() == 1
    assert _balance(customer) == 7500
    assert gateway.state(first.gateway_reference) == gateway.CAPTURED


def test_a_wallet_that_cannot_cover_the_charge_voids_the_hold(make_customer):
    customer = make_customer(balance_cents=100)

    # In a savepoint, as the saga's participant runs it: the failure undoes the step, not the transaction.
    with pytest.raises(InsufficientFunds), transaction.atomic():
        payment_charge(order_id=2, customer_id=customer.pk, amount_cents=2500, token="tok_ok", key="saga-2:charge")

    assert Payment.objects.count() == 0
    assert _balance(customer) == 100
    held = payment_authorize(token="tok_ok", amount_cents=2500, key="saga-2:charge")
    assert held.reference, "the key authorizes afresh: its first hold was voided"


def test_a_declined_card_charges_nothing(make_customer):
    customer = make_customer(balance_cents=10_000)
    with pytest.raises(PaymentDeclined):
        payment_charge(order_id=3, customer_id=customer.pk, amount_cents=100, token="tok_decline", key="saga-3:charge")
    assert (Payment.objects.count(), _balance(customer)) == (0, 10_000)


def test_a_refund_goes_through_the_gateway_once(make_customer, django_capture_on_commit_callbacks):
    customer = make_customer(balance_cents=10_000)
    with django_capture_on_commit_callbacks(execute=True):
        payment = payment_charge(order_id=4, customer_id=customer.pk, amount_cents=2500, token="tok_ok",
                                 key="saga-4:charge")

    payment_refund(key="saga-4:charge")
    payment_refund(key="saga-4:charge")

    assert Payment.objects.get().status == Payment.Status.REFUNDED
    assert _balance(customer) == 10_000
    assert gateway.state(payment.gateway_reference) == gateway.REFUNDED
    assert payment_refund(key="never-charged") is None


@pytest.fixture
def atomic(settings, make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "atomic"
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)
    return customer, client_for(customer)


def test_an_atomic_order_captures_its_hold_after_the_commit(atomic):
    customer, client = atomic
    response = client.post("/api/v1/orders", order_body([("SKU-A", 2)]), format="json")

    assert response.status_code == 201, response.content
    payment = Payment.objects.get(order_id=response.json()["id"])
    assert gateway.state(payment.gateway_reference) == gateway.CAPTURED
    assert (payment.amount_cents, _balance(customer)) == (2000, 8000)


@pytest.mark.parametrize(("body", "status"), [
    (order_body([("SKU-A", 9)]), 409),
    (order_body([("SKU-A", 1)], country="XX"), 422),
], ids=["out-of-stock", "undeliverable"])
def test_a_failed_atomic_order_voids_its_hold(atomic, body, status):
    customer, client = atomic
    response = client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="k-failed")
    assert response.status_code == status, response.content

    quantity = body["lines"][0]["quantity"]
    command = PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", quantity)], payment_token="tok_ok",
                         request_key="k-failed")
    key = authorization_key(request_key=request_key(command), amount_cents=1000 * quantity)
    reference = gateway.get_redis().get(f"gateway:key:{key}").decode()
    assert gateway.state(reference) == gateway.VOIDED
    assert (Payment.objects.count(), _balance(customer)) == (0, 10_000)


def test_a_retry_after_a_crash_between_hold_and_order_holds_and_charges_once(atomic):
    customer, client = atomic
    body = order_body([("SKU-A", 1)])
    # The first attempt claimed the key, held the money and died before its transaction; its lease ran out.
    key_claim(user_id=customer.pk, key="k-crash", method="POST", path="/api/v1/orders",
              fingerprint=request_fingerprint(method="POST", path="/api/v1/orders", body=body))
    IdempotencyKey.objects.update(locked_until=timezone.now() - timedelta(seconds=1))
    command = PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                         request_key="k-crash")
    key = authorization_key(request_key=request_key(command), amount_cents=1000)
    earlier = payment_authorize(token="tok_ok", amount_cents=1000, key=key)

    response = client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="k-crash")

    assert response.status_code == 201, response.content
    payment = Payment.objects.get()
    assert payment.gateway_reference == earlier.reference, "the retry used the first attempt's hold"
    assert gateway.state(earlier.reference) == gateway.CAPTURED
    assert (Order.objects.count(), _balance(customer)) == (1, 9000)
