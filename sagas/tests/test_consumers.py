"""A consumer whose database connection dies waits for it and tries again, in-process: no Celery ETA, no
retry task; past SAGA_DB_WAIT_SECONDS it hands the message back to the broker (requeue), never drops it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from celery.exceptions import Reject
from django.db import connections

from sagas import participants
from sagas.models import DeadLetter, InboxMessage, OutboxMessage
from sagas.participants import consume, handle_command
from shop.routers import service_alias

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]


def _terminate_connection_of(alias: str) -> None:
    """Kill the server side of `alias`'s open connection, as a PostgreSQL restart does."""
    connection = connections[alias]
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = {k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")}
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def _command() -> dict:
    return {"id": str(uuid.uuid4()), "saga_id": str(uuid.uuid4()), "saga": "order", "step": 3,
            "direction": "action", "key": f"{uuid.uuid4()}:schedule_shipment", "data": {}, "failure": None,
            "reply_queue": "sagas"}


def _run(command: dict):  # type: ignore[no-untyped-def]
    return consume(consumer="shipping", task="shipping.schedule", queue="shipping", message=command,
                   run=lambda m: handle_command(service="shipping", message=m, handler=lambda **_: {"done": True}))


def test_a_consumer_reconnects_after_its_database_connection_died(no_processes, caplog):
    alias = service_alias("shipping")
    command = _command()
    _terminate_connection_of(alias)
    participants._outage_logs.clear()  # logged once per period: make this test's failure show

    reply = _run(command)

    assert "database or Redis unavailable" in caplog.text, caplog.text

    assert (reply["outcome"], reply["result"]) == ("ok", {"done": True}), reply
    assert InboxMessage.objects.using(alias).filter(consumer="shipping", message_id=command["id"]).count() == 1
    assert OutboxMessage.objects.using(alias).filter(task="sagas.reply", message_id=reply["id"]).count() == 1
    assert not DeadLetter.objects.using(alias).exists()


def test_a_consumer_gives_the_message_back_when_the_database_stays_away(no_processes, settings):
    settings.SAGA_DB_WAIT_SECONDS = 0
    alias = service_alias("shipping")
    command = _command()
    _terminate_connection_of(alias)

    with pytest.raises(Reject) as rejected:
        _run(command)

    assert rejected.value.requeue is True
    connections[alias].close()
    assert not InboxMessage.objects.using(alias).filter(message_id=command["id"]).exists()
    assert not DeadLetter.objects.using(alias).exists()


def test_redis_away_inside_a_handler_is_waited_out_not_dead_lettered(no_processes, settings):
    """The payment gateway keeps its memory in Redis: Redis restarting is an outage to wait out, like the
    database's, not a broken message (which one failed try would dead-letter here)."""
    settings.SAGA_MESSAGE_ATTEMPTS = 1
    import socket

    import redis

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    calls = []

    def handler(**_: object) -> dict:
        calls.append(1)
        if len(calls) == 1:
            redis.Redis(port=closed_port, socket_connect_timeout=1).ping()
        return {"done": True}

    alias = service_alias("shipping")
    command = _command()
    reply = consume(consumer="shipping", task="shipping.schedule", queue="shipping", message=command,
                    run=lambda m: handle_command(service="shipping", message=m, handler=handler))

    assert (len(calls), reply["outcome"]) == (2, "ok"), (calls, reply)
    assert not DeadLetter.objects.using(alias).exists()
