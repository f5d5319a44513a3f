"""The window of inconsistency per order, from the commit timestamps the services record."""

from __future__ import annotations

import time

import pytest

from orders.flows import atomic
from orders.selectors import order_commit_spans
from orders.services import PlaceOrder, order_create, order_reject
from shop.testing import ADDRESS

pytestmark = pytest.mark.django_db


def command(customer) -> PlaceOrder:  # type: ignore[no-untyped-def]
    return PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                      shipping_address=ADDRESS)


def test_one_transaction_has_no_window_and_a_flow_in_steps_has_its_span(settings, make_product, make_customer):
    settings.ORDER_FLOW = "atomic"
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer()
    atomic.place_order(command(customer))
    # An order of a flow in several transactions: created, then made final by a later one.
    stepped = order_create(command=command(customer), flow="choreography")
    time.sleep(0.05)
    order_reject(order_id=stepped.pk, reason="out_of_stock")
    order_create(command=command(customer), flow="saga")  # still pending: not counted

    spans = sorted(order_commit_spans())

    assert [flow for flow, _, _ in spans] == ["atomic", "choreography"]
    (_, atomic_window, atomic_final), (_, window, final) = spans
    assert atomic_window == 0.0 and atomic_final >= 0.0
    assert window == final >= 0.05
