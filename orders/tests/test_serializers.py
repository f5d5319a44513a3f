"""The order's representation, built directly for speed, says exactly what its declared fields say."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework import serializers

from orders.models import Order
from orders.selectors import order_get
from orders.serializers import OrderSerializer
from orders.services import PlaceOrder, order_confirm, order_create
from shop.testing import ADDRESS

pytestmark = pytest.mark.django_db


def _declared(order: Order) -> dict:
    # DRF's own field-by-field representation of the same declared fields.
    return dict(serializers.Serializer.to_representation(OrderSerializer(), order))


@pytest.mark.parametrize("confirmed", [False, True], ids=["pending", "confirmed"])
def test_the_fast_representation_equals_the_declared_fields(make_product, confirmed):
    make_product(sku="SKU-A", price_cents=250)
    make_product(sku="SKU-B", price_cents=1000)
    command = PlaceOrder(customer_id=7, lines=[("SKU-B", 1), ("SKU-A", 3)], payment_token="tok_ok",
                         shipping_address=ADDRESS, request_key="k-1")
    created = order_create(command=command, flow="atomic")
    if confirmed:
        order_confirm(order_id=created.pk)

    stored = order_get(order_id=created.pk)

    assert OrderSerializer(stored).data == _declared(stored)
    assert OrderSerializer(created).data == _declared(created)
    assert [line["sku"] for line in OrderSerializer(stored).data["lines"]] == ["SKU-A", "SKU-B"]
    assert (stored.finalized_at is not None) is confirmed
    assert stored.created_at <= timezone.now()


def test_the_order_as_created_is_the_order_as_stored(make_product):
    make_product(sku="SKU-A", price_cents=250)
    command = PlaceOrder(customer_id=7, lines=[("SKU-A", 2)], payment_token="tok_ok", shipping_address=ADDRESS)

    created = order_create(command=command, flow="saga")

    assert OrderSerializer(created).data == OrderSerializer(order_get(order_id=created.pk)).data
