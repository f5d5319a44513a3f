"""The simulated gateway: authorizations idempotent by key, capture / void / refund idempotent by reference."""

from __future__ import annotations

import uuid

import pytest

from payments import gateway
from shop.errors import GatewayTimeout, PaymentDeclined


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_the_same_key_returns_the_same_authorization(key):
    first = gateway.authorize(token="tok_ok", amount_cents=1200, key=key)
    again = gateway.authorize(token="tok_ok", amount_cents=1200, key=key)

    assert again == first
    assert first.amount_cents == 1200
    assert gateway.state(first.reference) == gateway.AUTHORIZED


def test_a_captured_authorization_is_returned_to_a_repeat_and_never_held_again(key):
    first = gateway.authorize(token="tok_ok", amount_cents=500, key=key)
    assert gateway.capture(first.reference) is True

    assert gateway.authorize(token="tok_ok", amount_cents=500, key=key) == first
    assert gateway.capture(first.reference) is True, "capturing twice is harmless"
    assert gateway.state(first.reference) == gateway.CAPTURED


def test_a_voided_authorization_charges_nothing_and_the_key_authorizes_afresh(key):
    first = gateway.authorize(token="tok_ok", amount_cents=500, key=key)
    assert gateway.void(first.reference) is True
    assert gateway.void(first.reference) is True, "voiding twice is harmless"
    assert gateway.capture(first.reference) is False, "a voided hold cannot be captured"

    second = gateway.authorize(token="tok_ok", amount_cents=500, key=key)

    assert second.reference != first.reference
    assert (gateway.state(first.reference), gateway.state(second.reference)) == (gateway.VOIDED, gateway.AUTHORIZED)


def test_a_captured_charge_is_refunded_not_voided(key):
    auth = gateway.authorize(token="tok_ok", amount_cents=500, key=key)
    gateway.capture(auth.reference)

    assert gateway.void(auth.reference) is False
    assert gateway.refund(auth.reference) is True
    assert gateway.refund(auth.reference) is True, "refunding twice is harmless"
    assert gateway.state(auth.reference) == gateway.REFUNDED


def test_declines_and_timeouts_hold_nothing(key):
    with pytest.raises(PaymentDeclined):
        gateway.authorize(token="tok_decline", amount_cents=500, key=key)
    with pytest.raises(GatewayTimeout):
        gateway.authorize(token="tok_timeout", amount_cents=500, key=f"{key}:t")
    assert gateway.capture("auth_unknown") is False


def test_a_flaky_card_times_out_twice_per_key_then_holds_once(key):
    for _ in range(gateway.FLAKY_FAILURES):
        with pytest.raises(GatewayTimeout):
            gateway.authorize(token="tok_flaky", amount_cents=500, key=key)
    held = gateway.authorize(token="tok_flaky", amount_cents=500, key=key)

    assert gateway.authorize(token="tok_flaky", amount_cents=500, key=key) == held
