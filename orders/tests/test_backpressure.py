"""Backpressure: POST /api/v1/orders answers 503 `overloaded` with Retry-After instead of taking work it cannot
finish (a saga backlog at SAGA_MAX_BACKLOG) or cannot start (no database connection free). Nothing is placed,
the Idempotency-Key is released, and the same request succeeds once the pressure is gone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection, connections

from idempotency.models import IdempotencyKey
from orders.backpressure import backlog_forget
from orders.models import Order
from orders.services import order_confirm
from shop.testing import order_body

ORDERS = "/api/v1/orders"


def _assert_overloaded(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, (response.status_code, response.content)
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    assert response.json()["type"] == "/problems/overloaded", response.json()
    assert int(response["Retry-After"]) >= 1, response.get("Retry-After")


@pytest.fixture
def saga(settings, make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "saga"
    settings.SAGA_MAX_BACKLOG = 3
    backlog_forget()
    make_product(sku="SKU-A", stock=100)
    yield client_for(make_customer())
    backlog_forget()


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize("check_ms", [0, 10_000], ids=["counted-every-post", "counted-once-then-tracked"])
def test_a_saga_backlog_at_its_bound_is_refused_until_it_drains(settings, saga, check_ms):
    settings.SAGA_BACKLOG_CHECK_MS = check_ms
    settings.SAGA_MAX_BACKLOG = 3
    body = order_body([("SKU-A", 1)])
    accepted = [saga.post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY=f"k-{i}") for i in range(3)]
    assert [r.status_code for r in accepted] == [202, 202, 202], [r.content for r in accepted]

    refused = saga.post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-late")

    _assert_overloaded(refused)
    assert Order.objects.count() == 3
    assert not IdempotencyKey.objects.filter(key="k-late").exists(), "the 503 must release the key"
    # An order already accepted is still answered: a replay adds no work.
    replay = saga.post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-0")
    assert (replay.status_code, replay.content) == (202, accepted[0].content), replay.content

    order_confirm(order_id=Order.objects.order_by("id").first().pk)  # one saga finished
    backlog_forget()  # what the next count, SAGA_BACKLOG_CHECK_MS later, would see
    retried = saga.post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-late")

    assert retried.status_code == 202, retried.content
    assert "Idempotent-Replayed" not in retried
    assert Order.objects.filter(status=Order.Status.PENDING).count() == 3


@pytest.mark.django_db(databases="__all__")
def test_no_bound_means_no_refusal(settings, saga):
    settings.SAGA_MAX_BACKLOG = 0
    statuses = [saga.post(ORDERS, order_body([("SKU-A", 1)]), format="json").status_code for _ in range(5)]
    assert statuses == [202] * 5, statuses


@contextlib.contextmanager
def _every_connection_slot_taken() -> Iterator[None]:
    """Django's next connection is refused by PostgreSQL as "too many connections": it logs in as a role
    allowed one connection, which is already held. (Superusers ignore such limits, hence the role.)"""
    settings_dict = connection.settings_dict
    role = f"{settings_dict['NAME']}_limited"
    admin = psycopg.connect(dbname=settings_dict["NAME"], user=settings_dict["USER"], host=settings_dict["HOST"],
                            port=settings_dict["PORT"], password=settings_dict["PASSWORD"], autocommit=True)
    admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    holder = psycopg.connect(dbname=settings_dict["NAME"], user=role, host=settings_dict["HOST"],
                             port=settings_dict["PORT"])
    user = settings_dict["USER"]
    connections.close_all()
    settings_dict["USER"] = role
    try:
        yield
    finally:
        connections.close_all()
        settings_dict["USER"] = user
        holder.close()
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


@pytest.mark.django_db(transaction=True)
def test_an_atomic_order_without_a_free_connection_is_503_overloaded_not_500(settings, make_product, make_customer,
                                                                            client_for):
    settings.ORDER_FLOW = "atomic"
    make_product(sku="SKU-A", stock=10)
    client = client_for(make_customer())
    body = order_body([("SKU-A", 1)])

    with _every_connection_slot_taken():
        refused = client.post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    _assert_overloaded(refused)
    assert Order.objects.count() == 0
    retried = client.post(ORDERS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert retried.status_code == 201, retried.content
    assert "Idempotent-Replayed" not in retried
