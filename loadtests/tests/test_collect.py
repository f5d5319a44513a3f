"""The load report's order numbers, read through the orders selectors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from loadtests.collect import order_counts, window_counts
from orders.flows import place_order
from orders.services import PlaceOrder, order_create, order_reject
from shop.testing import ADDRESS

pytestmark = pytest.mark.django_db


def test_order_counts_and_window_count_each_status(make_product, make_customer):
    make_product(sku="SKU-A", stock=5)
    customer = make_customer()
    command = PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                         shipping_address=ADDRESS)
    since = timezone.now() - timedelta(seconds=1)
    place_order(command)
    place_order(command)
    order_create(command=command, flow="saga")
    order_reject(order_id=order_create(command=command, flow="saga").pk, reason="payment_declined")
    until = timezone.now() + timedelta(seconds=1)

    counts = order_counts()
    assert counts["by_status"] == {"PENDING": 1, "CONFIRMED": 2, "FAILED": 1}
    assert counts["failed_by_reason"] == {"payment_declined": 1}
    window = window_counts(since, until)
    assert {key: window[key] for key in ("placed", "final_now", "failed_now", "pending_now")} == {
        "placed": 4, "final_now": 3, "failed_now": 1, "pending_now": 1}
    assert window_counts(until, until + timedelta(seconds=1))["placed"] == 0
