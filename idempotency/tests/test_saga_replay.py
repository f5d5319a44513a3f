"""ORDER_FLOW=saga: the 202 and its Location are what a repeat gets back, whatever the saga did since."""

from __future__ import annotations

import pytest

from orders.models import Order
from shop.testing import order_body

pytest.importorskip("orders.flows.saga", reason="the saga flow (orders/flows/saga.py) is not there yet")

# No workers are needed: the order stays PENDING, and the replay must not depend on how far the saga got.
pytestmark = [pytest.mark.saga, pytest.mark.django_db(databases="__all__")]


def test_a_repeat_replays_the_202_with_its_location(settings, make_product, make_customer, client_for, post_order):
    settings.ORDER_FLOW = "saga"
    make_product(sku="SKU-A", stock=10)
    client = client_for(make_customer())

    first = post_order(client, order_body([("SKU-A", 1)]), "saga-key")
    assert first.status_code == 202, first.content
    assert first["Location"] == first.json()["url"]

    replay = post_order(client, order_body([("SKU-A", 1)]), "saga-key")

    assert replay.status_code == 202
    assert replay.content == first.content
    assert replay["Location"] == first["Location"]
    assert replay["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1
