"""ORDER_FLOW=saga answers 202 + Location for every accepted order: the first request, a replay, and a repeat
that finds the order an earlier attempt placed, whatever state that order has reached since.

No workers run: the earlier attempt's order is moved to its state by hand, as a finished saga would leave it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from idempotency.models import IdempotencyKey
from idempotency.services import key_claim, request_fingerprint
from orders.backpressure import backlog_forget
from orders.flows import place_order
from orders.models import Order
from orders.services import PlaceOrder, order_confirm, order_reject
from shop.testing import ADDRESS, order_body

pytestmark = pytest.mark.django_db(databases="__all__")

ORDERS = "/api/v1/orders"
KEY = "earlier-attempt"


@pytest.fixture
def alice(settings, make_product, make_customer):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "saga"
    backlog_forget()
    make_product(sku="SKU-A", stock=10)
    return make_customer(username="alice")


def _placed_earlier(user, state: str) -> Order:  # type: ignore[no-untyped-def]
    """The order a first attempt under KEY placed, moved to `state` as its saga would have left it."""
    order = place_order(PlaceOrder(customer_id=user.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                                   shipping_address=ADDRESS, request_key=KEY))
    if state == Order.Status.CONFIRMED:
        order_confirm(order_id=order.pk)
    elif state == Order.Status.FAILED:
        order_reject(order_id=order.pk, reason="payment_declined", detail="The card was declined.")
    return order


def _assert_accepted(response, order: Order, state: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 202, (response.status_code, response.content)
    body = response.json()
    assert (body["id"], body["status"]) == (order.pk, state), body
    assert response["Location"] == body["url"] == f"{ORDERS}/{order.pk}", (response.get("Location"), body)


STATES = [Order.Status.PENDING, Order.Status.CONFIRMED, Order.Status.FAILED]


@pytest.mark.parametrize("state", STATES)
def test_a_repeat_after_a_dead_attempt_is_202_with_the_orders_state_now(alice, client_for, state):
    body = order_body([("SKU-A", 1)])
    # The first attempt claimed the key, placed its order and died before storing its answer; its lease ran out.
    key_claim(user_id=alice.pk, key=KEY, method="POST", path=ORDERS,
              fingerprint=request_fingerprint(method="POST", path=ORDERS, body=body))
    IdempotencyKey.objects.filter(key=KEY).update(locked_until=timezone.now() - timedelta(seconds=1))
    order = _placed_earlier(alice, state)

    response = client_for(alice).post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY=KEY)

    _assert_accepted(response, order, state)
    assert Order.objects.count() == 1


@pytest.mark.parametrize("state", STATES)
def test_a_repeat_whose_order_collides_with_the_earlier_one_is_202(alice, client_for, state):
    # The key's record is gone (expired and purged), so the repeat runs the flow; its order collides with the
    # one carrying the key (IntegrityError), and that order is the answer.
    order = _placed_earlier(alice, state)

    response = client_for(alice).post(ORDERS, order_body([("SKU-A", 1)]), format="json", HTTP_IDEMPOTENCY_KEY=KEY)

    _assert_accepted(response, order, state)
    assert Order.objects.count() == 1


def test_a_replay_is_the_first_202_even_after_the_order_became_final(alice, client_for):
    client = client_for(alice)
    first = client.post(ORDERS, order_body([("SKU-A", 1)]), format="json", HTTP_IDEMPOTENCY_KEY=KEY)
    order = Order.objects.get()
    _assert_accepted(first, order, Order.Status.PENDING)
    order_reject(order_id=order.pk, reason="out_of_stock")

    replay = client.post(ORDERS, order_body([("SKU-A", 1)]), format="json", HTTP_IDEMPOTENCY_KEY=KEY)

    assert (replay.status_code, replay.content) == (first.status_code, first.content), replay.content
    assert replay["Location"] == first["Location"]
    assert replay["Idempotent-Replayed"] == "true"


def test_atomic_mode_still_answers_201_for_an_order_found_by_its_key(settings, alice, client_for):
    settings.ORDER_FLOW = "atomic"
    first = client_for(alice).post(ORDERS, order_body([("SKU-A", 1)]), format="json", HTTP_IDEMPOTENCY_KEY=KEY)
    IdempotencyKey.objects.all().delete()

    again = client_for(alice).post(ORDERS, order_body([("SKU-A", 1)]), format="json", HTTP_IDEMPOTENCY_KEY=KEY)

    assert (first.status_code, again.status_code) == (201, 201), (first.content, again.content)
    assert again.json()["id"] == first.json()["id"]
    assert "Location" not in again
