"""The SQL statements of one POST /api/v1/orders, pinned per mode: a change that adds one shows up here.

Counted over every database connection from the first byte of the request to the last, BEGIN and COMMIT
included, as PostgreSQL sees them (the test client skips nothing a gunicorn worker would run: the per-request
connection health check is off in both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from orders.backpressure import backlog_forget
from shop.testing import order_body

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# Two SKUs, so the per-line statements show.
LINES = [("SKU-B", 1), ("SKU-A", 2)]

# sagas.engine.saga_start in the API's transaction: the saga row, the step log of the step done by that
# transaction and the first command (outbox), written together in one statement.
SAGA_START_STATEMENTS = 1

ATOMIC = [
    "SELECT token + user (authentication)",
    "INSERT idempotency key (claim)",
    "SELECT prices (validation; the order is priced from the same read)",
    "BEGIN",
    "INSERT order and its lines (one statement)",
    "UPDATE products SKU-A, SKU-B and INSERT reservation (one statement)",
    "UPDATE wallet and INSERT payment (one statement)",
    "INSERT shipment",
    "UPDATE order CONFIRMED",
    "COMMIT",
    "UPDATE idempotency key (store the response)",
]


@contextlib.contextmanager
def _all_queries() -> Iterator[list[str]]:
    statements: list[str] = []
    with contextlib.ExitStack() as stack:
        contexts = [stack.enter_context(CaptureQueriesContext(connections[alias])) for alias in connections]
        yield statements
    statements.extend(query["sql"] for context in contexts for query in context.captured_queries)


def _post(client):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/orders", order_body(LINES), format="json")


@pytest.fixture
def client(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=100)
    make_product(sku="SKU-B", stock=100)
    return client_for(make_customer())


def test_an_atomic_order_costs_these_statements(settings, client):
    settings.ORDER_FLOW = "atomic"
    _post(client)  # connections opened, so connection set-up is not counted

    with _all_queries() as statements:
        response = _post(client)

    assert response.status_code == 201, response.content
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is False
    assert len(statements) == len(ATOMIC), "\n".join(statements)
    assert statements[3] == "BEGIN" and statements[-2] == "COMMIT", "\n".join(statements)


def test_a_saga_order_costs_these_statements(settings, client):
    settings.ORDER_FLOW = "saga"
    settings.SAGA_BACKLOG_CHECK_MS = 0  # the backlog is counted on every POST: the most it can cost
    backlog_forget()
    _post(client)

    with _all_queries() as statements:
        response = _post(client)

    assert response.status_code == 202, response.content
    # authentication, key claim, prices, backlog count; BEGIN, order and lines, the saga's start, COMMIT; the
    # stored response. The saga's start (saga row, step log, first command in the outbox) is the engine's.
    expected = 4 + 2 + SAGA_START_STATEMENTS + 1 + 1
    assert len(statements) == expected, "\n".join(statements)
