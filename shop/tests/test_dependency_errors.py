"""While PostgreSQL or Redis is away the API answers 503 problem+json with Retry-After, never 500, and it
recovers by itself: the first request once the server is back succeeds."""

from __future__ import annotations

import uuid

import pytest
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from django.test import Client
from rest_framework.throttling import UserRateThrottle

from orders.models import Order
from shop.errors import DependencyUnavailable, dependency_unavailable
from shop.testing import order_body
from shop.tests.outages import database_away, free_port


def _unavailable(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    assert response["Retry-After"] == str(DependencyUnavailable.retry_after), response.headers
    body = response.json()
    assert (body["type"], body["code"], body["status"]) == (
        "/problems/dependency-unavailable", "dependency_unavailable", 503), body
    return body


@pytest.fixture
def customer_client(make_customer, client_for):  # type: ignore[no-untyped-def]
    return client_for(make_customer(balance_cents=50_000))


@pytest.mark.parametrize("exc", [OperationalError("server closed the connection unexpectedly"),
                                 InterfaceError("connection already closed")])
def test_database_connection_errors_are_dependency_unavailable(exc):
    assert isinstance(dependency_unavailable(exc), DependencyUnavailable)


@pytest.mark.parametrize("exc", [IntegrityError("duplicate key"), DataError("value too long"),
                                 ProgrammingError("syntax error"), ValueError("bug")])
def test_other_database_errors_and_bugs_are_not(exc):
    assert dependency_unavailable(exc) is None, f"{exc!r} would be hidden as a 503"


@pytest.mark.django_db(transaction=True)
def test_api_answers_503_while_the_database_is_away_and_200_once_it_is_back(customer_client):
    assert customer_client.get("/api/v1/wallet").status_code == 200

    # This test's own connection dies too, as every connection does when PostgreSQL restarts.
    with database_away(spare_own=False):
        for _ in range(3):  # the dead connection first, then connections refused
            _unavailable(customer_client.get("/api/v1/wallet"))
        _unavailable(customer_client.post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json"))

    response = customer_client.get("/api/v1/wallet")
    assert response.status_code == 200, response.content
    assert response.json()["balance_cents"] == 50_000


@pytest.mark.django_db(transaction=True)
def test_pages_outside_the_api_answer_503_too(admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    assert client.get("/admin/").status_code == 200

    with database_away(spare_own=False):
        _unavailable(client.get("/admin/"))
        _unavailable(client.get("/admin/orders/order/"))

    assert client.get("/admin/").status_code == 200


@pytest.fixture
def throttled(monkeypatch) -> None:
    """Throttling on: every API request reads and writes its counter in Django's cache, which is Redis."""
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "1000/s"})


@pytest.mark.django_db
def test_api_answers_503_while_redis_is_away_and_a_retry_then_succeeds(customer_client, make_product, settings,
                                                                        throttled):
    settings.ORDER_FLOW = "atomic"
    make_product(sku="SKU-A", stock=5)
    assert customer_client.get("/api/v1/wallet").status_code == 200
    reachable = settings.CACHES
    settings.CACHES = {"default": {**reachable["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
    key, body = uuid.uuid4().hex, order_body([("SKU-A", 1)])

    _unavailable(customer_client.get("/api/v1/wallet"))
    _unavailable(customer_client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=key))
    assert Order.objects.count() == 0

    settings.CACHES = reachable
    # Nothing was stored under the key: the same request runs now that Redis is back.
    response = customer_client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 201, response.content
    assert "Idempotent-Replayed" not in response, response.headers
    assert Order.objects.count() == 1
