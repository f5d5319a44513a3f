"""The Idempotency-Key protocol on POST /api/v1/orders, ORDER_FLOW=atomic, against the real database."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from idempotency.models import IdempotencyKey
from idempotency.services import key_claim, request_fingerprint
from inventory.models import Product
from inventory.services import product_upsert
from orders.flows import place_order
from orders.models import Order
from orders.services import PlaceOrder
from payments.models import Payment, Wallet
from shop.errors import ConcurrencyConflict
from shop.testing import ADDRESS, order_body

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders"


@pytest.fixture
def world(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=10, price_cents=1000)
    make_product(sku="SKU-B", stock=10, price_cents=500)
    alice, bob = make_customer(username="alice"), make_customer(username="bob")
    return {"alice": client_for(alice), "bob": client_for(bob), "alice_user": alice, "bob_user": bob}


def _problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{code}"
    return body


def _assert_replay_of(replay, first) -> None:  # type: ignore[no-untyped-def]
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay["Content-Type"] == first["Content-Type"]
    assert replay.get("Location") == first.get("Location")
    assert replay["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first


def _on_hand(sku: str = "SKU-A") -> int:
    return Product.objects.get(sku=sku).on_hand


def test_a_repeat_replays_the_first_response_and_does_nothing_else(world, post_order):
    first = post_order(world["alice"], order_body([("SKU-A", 2)]), "k-1")
    assert first.status_code == 201, first.content
    # Same request, other key order and whitespace: the same fingerprint.
    body = order_body([("SKU-A", 2)])
    reordered = json.dumps({key: body[key] for key in reversed(body)}, indent=4)
    replay = world["alice"].post(ORDERS, reordered, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")

    _assert_replay_of(replay, first)
    assert Order.objects.count() == 1
    assert _on_hand() == 8
    assert Payment.objects.count() == 1
    record = IdempotencyKey.objects.get()
    assert (record.state, record.response_status) == (IdempotencyKey.State.COMPLETED, 201)


def test_the_same_key_with_another_body_is_422_and_does_nothing(world, post_order):
    assert post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1").status_code == 201

    _problem(post_order(world["alice"], order_body([("SKU-A", 3)]), "k-1"), 422, "idempotency-key-reused")

    assert Order.objects.count() == 1
    assert _on_hand() == 9
    # The stored answer is untouched: the original request still replays.
    assert post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")["Idempotent-Replayed"] == "true"


def test_the_same_key_on_another_path_is_422(world, post_order):
    assert post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1").status_code == 201
    response = world["alice"].post(f"{ORDERS}?x=1", order_body([("SKU-A", 1)]), format="json",
                                   HTTP_IDEMPOTENCY_KEY="k-1")
    _problem(response, 422, "idempotency-key-reused")
    assert Order.objects.count() == 1


def test_a_missing_key_is_400_when_required(world):
    client = APIClient()
    client.force_authenticate(world["alice_user"])
    _problem(client.post(ORDERS, order_body([("SKU-A", 1)]), format="json"), 400, "missing-idempotency-key")
    assert Order.objects.count() == 0


def test_without_the_requirement_a_keyless_post_places_an_order(world, settings):
    settings.IDEMPOTENCY_KEY_REQUIRED = False
    client = APIClient()
    client.force_authenticate(world["alice_user"])
    assert client.post(ORDERS, order_body([("SKU-A", 1)]), format="json").status_code == 201
    assert client.post(ORDERS, order_body([("SKU-A", 1)]), format="json").status_code == 201
    assert list(Order.objects.values_list("request_key", flat=True)) == [None, None]
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9", "nl\nx"],
                         ids=["empty", "256-chars", "tab", "non-ascii", "newline"])
def test_an_invalid_key_is_400(world, post_order, key):
    _problem(post_order(world["alice"], order_body([("SKU-A", 1)]), key), 400, "invalid-idempotency-key")
    assert Order.objects.count() == IdempotencyKey.objects.count() == 0


def test_a_255_character_key_is_accepted_and_stored_on_the_order(world, post_order):
    key = "K" * 254 + "~"
    response = post_order(world["alice"], order_body([("SKU-A", 1)]), key)
    assert response.status_code == 201
    assert Order.objects.get().request_key == key


def test_keys_are_scoped_per_user(world, post_order):
    alice = post_order(world["alice"], order_body([("SKU-A", 1)]), "shared")
    bob = post_order(world["bob"], order_body([("SKU-B", 2)]), "shared")

    assert alice.status_code == bob.status_code == 201
    assert alice.json()["id"] != bob.json()["id"]
    _assert_replay_of(post_order(world["bob"], order_body([("SKU-B", 2)]), "shared"), bob)
    _assert_replay_of(post_order(world["alice"], order_body([("SKU-A", 1)]), "shared"), alice)
    assert Order.objects.count() == 2


def test_a_validation_error_is_not_stored_and_a_corrected_retry_succeeds(world, post_order):
    invalid = order_body([("SKU-A", 1)], country="gb")
    _problem(post_order(world["alice"], invalid, "k-1"), 400, "validation-error")
    assert IdempotencyKey.objects.count() == 0

    response = post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")

    assert response.status_code == 201, response.content
    assert "Idempotent-Replayed" not in response
    assert Order.objects.get().request_key == "k-1"


def test_malformed_json_is_not_stored(world):
    response = world["alice"].post(ORDERS, "{nope", content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    _problem(response, 400, "malformed-request")
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (order_body([("SKU-A", 11)]), 409, "out-of-stock"),
        (order_body([("SKU-A", 1)], token="tok_decline"), 402, "payment-declined"),
        (order_body([("SKU-A", 1)], country="XX"), 422, "undeliverable"),
        (order_body([("SKU-A", 1)], token="tok_timeout"), 503, "payment-unavailable"),
    ],
    ids=["out-of-stock", "declined", "undeliverable", "payment-unavailable"],
)
def test_a_business_failure_is_stored_and_replayed(world, post_order, body, status, code):
    first = post_order(world["alice"], body, "k-1")
    _problem(first, status, code)
    # Whatever changes meanwhile, the key keeps its answer: it is replayed, not run again.
    product_upsert(sku="SKU-A", name="Restocked", price_cents=1000, stock=100)

    replay = post_order(world["alice"], body, "k-1")

    _assert_replay_of(replay, first)
    assert Order.objects.count() == 0
    assert IdempotencyKey.objects.get().response_status == status


def test_an_unexpected_error_releases_the_key(world, post_order, monkeypatch):
    def crash(command: PlaceOrder) -> Order:
        raise RuntimeError("boom")

    monkeypatch.setattr("orders.api.place_order", crash)
    with pytest.raises(RuntimeError):
        post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")
    assert IdempotencyKey.objects.count() == 0
    monkeypatch.undo()

    response = post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response


def test_a_concurrency_conflict_is_transient_and_releases_the_key(world, post_order, monkeypatch):
    def conflict(command: PlaceOrder) -> Order:
        raise ConcurrencyConflict("deadlocked too often")

    monkeypatch.setattr("orders.api.place_order", conflict)
    _problem(post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1"), 503, "concurrency-conflict")
    assert IdempotencyKey.objects.count() == 0
    monkeypatch.undo()

    assert post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1").status_code == 201


def _hold(user, body: dict, key: str, *, lease_over: bool) -> None:  # type: ignore[no-untyped-def]
    """A first attempt that claimed `key` and is still running, or died (its lease ran out)."""
    fingerprint = request_fingerprint(method="POST", path=ORDERS, body=body)
    key_claim(user_id=user.pk, key=key, method="POST", path=ORDERS, fingerprint=fingerprint)
    if lease_over:
        IdempotencyKey.objects.filter(key=key).update(locked_until=timezone.now() - timedelta(seconds=1))


def test_a_repeat_while_the_first_runs_is_409_with_retry_after(world, post_order):
    body = order_body([("SKU-A", 1)])
    _hold(world["alice_user"], body, "k-1", lease_over=False)

    response = post_order(world["alice"], body, "k-1")

    _problem(response, 409, "idempotency-key-in-use")
    assert response["Retry-After"] == "1"
    assert Order.objects.count() == 0
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.LOCKED


def test_a_dead_attempt_that_placed_nothing_is_run_again(world, post_order):
    body = order_body([("SKU-A", 1)])
    _hold(world["alice_user"], body, "k-1", lease_over=True)

    response = post_order(world["alice"], body, "k-1")

    assert response.status_code == 201, response.content
    assert Order.objects.get().request_key == "k-1"
    assert _on_hand() == 9
    _assert_replay_of(post_order(world["alice"], body, "k-1"), response)


def test_a_dead_attempt_that_placed_the_order_is_answered_with_that_order(world, post_order):
    body = order_body([("SKU-A", 2)])
    _hold(world["alice_user"], body, "k-1", lease_over=True)
    # The first attempt committed its order, then died before storing the response.
    placed = place_order(PlaceOrder(customer_id=world["alice_user"].pk, lines=[("SKU-A", 2)], payment_token="tok_ok",
                                    shipping_address=ADDRESS, request_key="k-1"))

    response = post_order(world["alice"], body, "k-1")

    assert response.status_code == 201, response.content
    assert response.json()["id"] == placed.pk
    assert Order.objects.count() == 1
    assert _on_hand() == 8
    assert Payment.objects.count() == 1
    assert Wallet.objects.get(customer_id=world["alice_user"].pk).balance_cents == 1_000_000 - 2000
    _assert_replay_of(post_order(world["alice"], body, "k-1"), response)


def test_an_expired_key_is_forgotten_but_its_order_is_not_placed_twice(world, post_order):
    first = post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    again = post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again  # answered afresh, with the order the key already placed
    assert again.json()["id"] == first.json()["id"]
    assert Order.objects.count() == 1
    assert _on_hand() == 9

    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    _problem(post_order(world["alice"], order_body([("SKU-B", 1)]), "k-1"), 422, "idempotency-key-reused")
    assert Order.objects.count() == 1
    assert _on_hand("SKU-B") == 10


def test_keys_expire_after_the_ttl(world, post_order, settings):
    settings.IDEMPOTENCY_TTL_HOURS = 5
    before = timezone.now()
    post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")
    record = IdempotencyKey.objects.get()
    assert timedelta(hours=5) - timedelta(seconds=5) < record.expires_at - before < timedelta(hours=5, seconds=5)


def test_a_purged_key_finds_the_order_it_placed_instead_of_placing_another(world, post_order):
    first = post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")
    IdempotencyKey.objects.all().delete()  # what purge does once the key expired

    # The fresh claim runs the flow, whose order collides with the one carrying the key: that order is the answer.
    again = post_order(world["alice"], order_body([("SKU-A", 1)]), "k-1")
    assert again.status_code == 201, again.content
    assert again.json()["id"] == first.json()["id"]
    assert Order.objects.count() == 1
    assert _on_hand() == 9
    assert Payment.objects.count() == 1

    IdempotencyKey.objects.all().delete()
    _problem(post_order(world["alice"], order_body([("SKU-A", 2)]), "k-1"), 422, "idempotency-key-reused")
    assert Order.objects.count() == 1
    assert _on_hand() == 9
