"""Login throttling (shared by every web worker, in Redis), expiring and revocable tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from shop.redis import get_redis

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/token"


@pytest.fixture(autouse=True)
def _fast_hashing(settings) -> None:  # type: ignore[no-untyped-def]
    # Hundreds of logins: the production hasher would spend the test's time on purpose-built slowness.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_failures_counted() -> None:
    client = get_redis()
    keys = list(client.scan_iter("shop:login-failures:*"))
    if keys:
        client.delete(*keys)


def _login(username: str, password: str, *, address: str = "10.0.0.1"):  # type: ignore[no-untyped-def]
    return APIClient(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password},
                                               format="json")


def test_thirty_wrong_passwords_then_429_with_retry_after_even_for_the_right_one(make_customer):
    make_customer(username="victim")
    for _ in range(30):
        assert _login("victim", "wrong").status_code == 400
    response = _login("victim", "password")
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 900


def test_the_username_is_throttled_whatever_address_guesses(make_customer):
    make_customer(username="victim")
    for n in range(30):
        assert _login("victim", "wrong", address=f"10.1.0.{n}").status_code == 400
    assert _login("victim", "password", address="10.2.0.1").status_code == 429


def test_the_address_is_throttled_whatever_username_it_guesses(make_customer):
    make_customer(username="someone")
    for n in range(30):
        assert _login(f"guess{n}", "wrong").status_code == 400
    assert _login("someone", "password").status_code == 429
    assert _login("someone", "password", address="10.9.9.9").status_code == 200


def test_successful_logins_are_not_counted_and_a_success_resets_the_username(make_customer):
    make_customer(username="shopper")
    for _ in range(40):
        assert _login("shopper", "password").status_code == 200
    for _ in range(29):
        _login("shopper", "wrong", address="10.3.0.1")
    assert _login("shopper", "password", address="10.3.0.2").status_code == 200
    for _ in range(29):
        _login("shopper", "wrong", address="10.3.0.3")
    assert _login("shopper", "password", address="10.3.0.4").status_code == 200


def test_a_forged_x_forwarded_for_does_not_escape_the_address_count(make_customer):
    make_customer(username="someone")
    for n in range(30):
        client = APIClient(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=f"172.16.0.{n}")
        client.post(LOGIN, {"username": f"guess{n}", "password": "wrong"}, format="json")
    assert _login("someone", "password").status_code == 429


def test_token_response_is_not_cacheable_and_says_when_it_expires(make_customer, settings):
    settings.API_TOKEN_TTL_HOURS = 2
    make_customer(username="shopper")
    response = _login("shopper", "password")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = Token.objects.get(key=response.json()["token"])
    assert response.json()["expires_at"] is not None
    assert abs((token.created + timedelta(hours=2)).timestamp()
               - _parse(response.json()["expires_at"]).timestamp()) < 1


def _parse(value: str):  # type: ignore[no-untyped-def]
    from django.utils.dateparse import parse_datetime

    return parse_datetime(value)


def test_an_expired_token_is_refused_and_a_new_login_issues_another(make_customer, settings):
    settings.API_TOKEN_TTL_HOURS = 1
    make_customer(username="shopper")
    key = _login("shopper", "password").json()["token"]
    client = APIClient(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/wallet").status_code == 200
    Token.objects.filter(key=key).update(created=Token.objects.get(key=key).created - timedelta(hours=1, seconds=1))
    response = client.get("/api/v1/wallet")
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    fresh = _login("shopper", "password").json()["token"]
    assert fresh != key
    assert APIClient(HTTP_AUTHORIZATION=f"Token {fresh}").get("/api/v1/wallet").status_code == 200


def test_a_revoked_token_stops_working_at_once(make_customer):
    make_customer(username="shopper")
    key = _login("shopper", "password").json()["token"]
    client = APIClient(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.post("/api/v1/auth/token/revoke").status_code == 204
    assert client.get("/api/v1/wallet").status_code == 401
    assert client.post("/api/v1/auth/token/revoke").status_code == 401
    assert _login("shopper", "password").json()["token"] != key
