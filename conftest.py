"""Fixtures shared by every app's tests: real PostgreSQL, real Redis, factories for the demo world."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inventory.models import Product
from inventory.services import product_upsert
from payments.services import wallet_set
from shop.redis import get_redis


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """The 2pc tests (`-m twopc`) need ORDER_FLOW=2pc and a database per service in this process (every connection
    then carries the flow's lock_timeout): `make test` runs them in a pass of their own, and skips them elsewhere."""
    from django.conf import settings

    from shop.env import SERVICES

    if settings.ORDER_FLOW == "2pc" and all(service in settings.DATABASES for service in SERVICES):
        return
    skip = pytest.mark.skip(reason="run with ORDER_FLOW=2pc and a database per service (make test does)")
    for item in items:
        if item.get_closest_marker("twopc") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _fresh_gateway_memory() -> None:
    # Order ids restart with each test database; forget what the gateway remembers of earlier runs.
    client = get_redis()
    keys = list(client.scan_iter("gateway:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_product(db) -> Callable[..., Product]:  # type: ignore[no-untyped-def]
    counter = iter(range(1, 10_000))

    def make(*, sku: str | None = None, stock: int = 100, price_cents: int = 1000) -> Product:
        return product_upsert(sku=sku or f"SKU-{next(counter):04d}", name="Test product",
                              price_cents=price_cents, stock=stock)

    return make


@pytest.fixture
def make_customer(db):  # type: ignore[no-untyped-def]
    counter = iter(range(1, 10_000))

    def make(*, balance_cents: int = 1_000_000, username: str | None = None):  # type: ignore[no-untyped-def]
        user = get_user_model().objects.create_user(username=username or f"customer{next(counter)}",
                                                    password="password")
        wallet_set(customer_id=user.pk, balance_cents=balance_cents)
        return user

    return make


class KeyedAPIClient(APIClient):
    """Sends a fresh Idempotency-Key with every POST that does not bring its own, as a careful client does."""

    def post(self, path: str, data: Any = None, format: str | None = None, content_type: str | None = None,
             follow: bool = False, **extra: Any) -> Any:
        extra.setdefault("HTTP_IDEMPOTENCY_KEY", uuid.uuid4().hex)
        return super().post(path, data, format, content_type, follow, **extra)


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    def make(user) -> APIClient:  # type: ignore[no-untyped-def]
        client = KeyedAPIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make

