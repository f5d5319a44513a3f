"""/health/live and /health/ready against the real servers: each dependency's check can fail."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from sagas.models import OutboxMessage
from shop.celery import app
from shop.testing import wait_until


@pytest.fixture
def broker_away():  # type: ignore[no-untyped-def]
    """The broker URL points at a port nothing listens on, for this test."""
    url = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    yield
    app.conf.broker_url = url


def test_live_answers_without_touching_anything(client):
    # No django_db mark: any database access would raise.
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready_checks_every_database_the_cache_and_the_broker(client, settings):
    response = client.get("/health/ready")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert {f"database:{alias}" for alias in settings.DATABASES} | {"cache:default", "broker"} <= set(body["checks"])
    assert set(body["checks"].values()) == {"ok"}
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_ready_is_503_with_retry_after_while_the_broker_is_away(client, broker_away):
    response = client.get("/health/ready")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    checks = response.json()["checks"]
    assert checks["broker"].startswith("Unavailable: broker unreachable"), checks
    assert checks["database:default"] == "ok"


@pytest.mark.django_db
def test_ready_is_503_while_a_database_is_away(client):
    from django.db import connections

    # Every thread's connection to "default" is made from this one dict: point it at a port nothing listens on.
    config = connections["default"].settings_dict
    saved = dict(config)
    config.update(HOST="127.0.0.1", PORT="1")
    try:
        response = client.get("/health/ready")
    finally:
        config.clear()
        config.update(saved)

    assert response.status_code == 503
    assert response.json()["checks"]["database:default"] != "ok"


@pytest.mark.saga
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_ready_in_saga_mode_sees_a_stalled_relay_and_no_worker(no_processes, client, settings):
    settings.OUTBOX_READY_MAX_LAG_SECONDS = 5
    OutboxMessage.objects.create(message_id=uuid.uuid4(), queue="inventory", task="inventory.reserve_stock",
                                 payload={}, available_at=timezone.now() - timedelta(seconds=60))

    response = client.get("/health/ready")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert "1 outbox messages waiting" in checks["outbox_lag:default"], checks
    assert checks["worker"].startswith("Unavailable"), checks


@pytest.mark.saga
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_ready_in_saga_mode_with_relays_and_workers_running(saga, client):
    # Ready once the workers just started answer pings.
    wait_until(lambda: client.get("/health/ready").status_code == 200, timeout=60, interval=0.5)
    response = client.get("/health/ready")

    assert response.status_code == 200, response.content
    checks = response.json()["checks"]
    assert checks["worker"] == "ok"
    assert all(value == "ok" for name, value in checks.items() if name.startswith("outbox_lag:")), checks
