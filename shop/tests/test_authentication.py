"""API tokens: the hand-written lookup answers as DRF's TokenAuthentication does."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _wallet(token: str):  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/wallet")


def test_a_token_authenticates_its_own_user(make_customer):
    alice = make_customer(balance_cents=1234)
    make_customer(balance_cents=999)

    response = _wallet(Token.objects.create(user=alice).key)

    assert response.status_code == 200, response.content
    assert response.json()["balance_cents"] == 1234


def test_an_unknown_token_is_401(make_customer):
    make_customer()

    response = _wallet("0" * 40)

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/authentication-failed"


def test_an_inactive_users_token_is_401(make_customer):
    alice = make_customer()
    token = Token.objects.create(user=alice).key
    alice.is_active = False
    alice.save()

    response = _wallet(token)

    assert response.status_code == 401
    assert response.json()["type"] == "/problems/authentication-failed"
