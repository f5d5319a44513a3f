"""Many copies of one request at once, as a client's retries (or a flaky proxy) would send them."""

from __future__ import annotations

import functools

import pytest

from idempotency.models import IdempotencyKey
from inventory.models import Product
from operations.audit import run_audit
from orders.models import Order
from payments.models import Payment
from shop.testing import all_at_once, order_body

REQUESTS = 50


@pytest.mark.django_db(transaction=True)  # real commits: every thread sees the others' key rows
def test_fifty_concurrent_requests_with_one_key_place_exactly_one_order(make_product, make_customer, client_for,
                                                                        post_order):
    make_product(sku="SKU-A", stock=100)
    customer = make_customer()
    clients = [client_for(customer) for _ in range(REQUESTS)]
    responses = all_at_once([
        functools.partial(post_order, client, order_body([("SKU-A", 1)]), "the-one-key") for client in clients
    ])

    assert len(responses) == REQUESTS
    originals = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r]
    replays = [r for r in responses if r.get("Idempotent-Replayed") == "true"]
    in_use = [r for r in responses if r.status_code == 409]
    assert len(originals) == 1, [(r.status_code, r.content) for r in responses]
    assert len(originals) + len(replays) + len(in_use) == REQUESTS
    assert all(r.json()["type"] == "/problems/idempotency-key-in-use" for r in in_use)
    assert all(r.status_code == 201 and r.content == originals[0].content for r in replays)
    assert Order.objects.count() == 1
    assert Payment.objects.count() == 1
    assert Product.objects.get(sku="SKU-A").on_hand == 99
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.COMPLETED
    assert [check.line() for check in run_audit() if not check.ok] == []
