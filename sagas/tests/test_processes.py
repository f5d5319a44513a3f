"""Every long-running process outlives its dependencies: real processes, a real PostgreSQL that stops accepting
connections and drops the ones it has, a real Redis that stops and starts again. The relay and the sweeper
log the outage once, keep trying with backoff, resume by themselves and stop only when told to; a Celery
worker reconnects to its broker; the web server answers 503 meanwhile and 200 as soon as it is back."""

from __future__ import annotations

import json
import signal
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from sagas.models import OutboxMessage
from sagas.outbox import outbox_send
from sagas.processes import relay_command, sweeper_command, worker_command
from shop.redis import get_redis
from shop.testing import wait_until
from shop.tests.outages import (
    RedisServer,
    database_away,
    free_port,
    read_text,
    terminate_connections,
    wait_for_line,
)

pytestmark = pytest.mark.django_db(transaction=True)

PYTHON = sys.executable
QUEUE = "test-processes"
RELAY_FAILED = "WARNING sagas.outbox outbox relay on default: "
RELAY_RECOVERED = "outbox relay on default: recovered after"
SWEEPER_FAILED = "WARNING sagas.sweeper saga sweeper: "


def _failures(text: str, prefix: str) -> int:
    """How many failures a process logged (first lines and summaries; not the recovery)."""
    return sum(1 for line in text.splitlines() if prefix in line and "retrying in" in line)


def _send() -> uuid.UUID:
    message_id = uuid.uuid4()
    with transaction.atomic():
        outbox_send(using="default", queue=QUEUE, task="tests.noop", payload={"probe": str(message_id)},
                    message_id=message_id)
    return message_id


def _queued_ids(client) -> list[str]:  # type: ignore[no-untyped-def]
    """Task ids of the messages waiting in the test queue of a Redis broker, oldest first."""
    return [json.loads(raw)["headers"]["id"] for raw in reversed(client.lrange(QUEUE, 0, -1))]


def _published(message_id: uuid.UUID) -> bool:
    return OutboxMessage.objects.filter(message_id=message_id, published_at__isnull=False).exists()


def _stop(stack, name: str) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """SIGTERM the process `name` and return its exit code and log."""
    process = stack.procs[name]
    stack.stop(name, signal.SIGTERM, timeout=30)
    return process.returncode, read_text(_log(stack, name))


def _log(stack, name: str) -> Path:  # type: ignore[no-untyped-def]
    return stack.log_dir / f"{name}.log"


@pytest.fixture
def broker_queue() -> Iterator[None]:
    get_redis().delete(QUEUE)
    yield
    get_redis().delete(QUEUE)


def test_relay_with_no_database_keeps_trying_logs_once_and_stops_when_told(no_processes):
    name = f"relay-nowhere-{uuid.uuid4().hex[:6]}"
    no_processes.start(name, relay_command(PYTHON), DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                       LOG_LEVEL="DEBUG")
    log = _log(no_processes, name)
    # Attempt 4 comes after about 0.25 + 0.5 + 1 + 2 s of backoff.
    assert wait_for_line(log, "outbox relay on default: attempt 4 failed", timeout=60), read_text(log)[-3000:]
    assert no_processes.running(name), read_text(log)[-3000:]
    assert _failures(read_text(log), RELAY_FAILED) == 1, read_text(log)[-3000:]

    code, text = _stop(no_processes, name)
    assert code == 0, text[-3000:]
    assert "stopped after publishing 0 messages" in text, text[-3000:]


def test_relay_survives_its_database_going_away_and_publishes_what_was_written_meanwhile(no_processes, broker_queue):
    name = f"relay-dbaway-{uuid.uuid4().hex[:6]}"
    relay = no_processes.start(name, relay_command(PYTHON), LOG_LEVEL="DEBUG")
    log = _log(no_processes, name)
    before = _send()
    assert wait_until(lambda: _queued_ids(get_redis()) == [str(before)], timeout=60), read_text(log)[-3000:]

    with database_away():
        during = _send()  # this test's own connection is spared: the change commits, its message waits
        assert wait_for_line(log, RELAY_FAILED, timeout=60), read_text(log)[-3000:]
        assert wait_for_line(log, "outbox relay on default: attempt 3 failed", timeout=60), read_text(log)[-3000:]
        assert not _published(during)

    assert wait_until(lambda: _published(during), timeout=90), read_text(log)[-3000:]
    assert _queued_ids(get_redis()) == [str(before), str(during)], read_text(log)[-3000:]
    assert wait_for_line(log, RELAY_RECOVERED, timeout=10), read_text(log)[-3000:]
    text = read_text(log)
    assert relay.poll() is None, text[-3000:]
    assert _failures(text, RELAY_FAILED) == 1, text[-3000:]
    assert text.count(RELAY_RECOVERED) == 1, text[-3000:]

    after = _send()  # and it still listens: a new message goes out at once
    assert wait_until(lambda: _published(after), timeout=30), read_text(log)[-3000:]
    code, text = _stop(no_processes, name)
    assert code == 0, text[-3000:]


def test_relay_survives_a_broker_restart_and_marks_nothing_it_could_not_publish(no_processes, tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    try:
        name = f"relay-brokeraway-{uuid.uuid4().hex[:6]}"
        relay = no_processes.start(name, relay_command(PYTHON), REDIS_URL=server.url, CELERY_BROKER_URL=server.url)
        log = _log(no_processes, name)
        before = _send()
        assert wait_until(lambda: _queued_ids(server.client()) == [str(before)], timeout=60), read_text(log)[-3000:]

        server.stop()
        during = _send()
        assert wait_for_line(log, RELAY_FAILED, timeout=60), read_text(log)[-3000:]
        # It claimed the row, failed to publish it, and the claim rolled back: not published, not counted.
        row = OutboxMessage.objects.get(message_id=during)
        assert (row.published_at, row.publish_count) == (None, 0), (row.published_at, row.publish_count)

        server.start()  # empty: the broker lost everything it held, as a Redis without persistence does
        assert wait_until(lambda: _published(during), timeout=90), read_text(log)[-3000:]
        assert _queued_ids(server.client()) == [str(during)], read_text(log)[-3000:]
        assert OutboxMessage.objects.get(message_id=during).publish_count == 1
        assert wait_for_line(log, RELAY_RECOVERED, timeout=10), read_text(log)[-3000:]
        text = read_text(log)
        assert relay.poll() is None, text[-3000:]
        assert _failures(text, RELAY_FAILED) == 1, text[-3000:]
        assert text.count(RELAY_RECOVERED) == 1, text[-3000:]
        code, text = _stop(no_processes, name)
        assert code == 0, text[-3000:]
    finally:
        server.stop()


def test_sweeper_survives_its_database_going_away(no_processes):
    name = f"sweeper-dbaway-{uuid.uuid4().hex[:6]}"
    sweeper = no_processes.start(name, sweeper_command(PYTHON))
    log = _log(no_processes, name)
    assert wait_for_line(log, "saga sweeper: every", timeout=60), read_text(log)[-3000:]

    with database_away():
        assert wait_for_line(log, SWEEPER_FAILED, timeout=60), read_text(log)[-3000:]
        assert sweeper.poll() is None, read_text(log)[-3000:]

    assert wait_for_line(log, "saga sweeper: recovered after", timeout=90), read_text(log)[-3000:]
    text = read_text(log)
    assert sweeper.poll() is None, text[-3000:]
    assert _failures(text, SWEEPER_FAILED) == 1, text[-3000:]
    assert text.count("saga sweeper: recovered after") == 1, text[-3000:]
    code, text = _stop(no_processes, name)
    assert code == 0, text[-3000:]
    assert "saga sweeper stopped" in text, text[-3000:]


def test_celery_worker_survives_a_broker_restart(no_processes, tmp_path):
    from celery import Celery

    server = RedisServer(tmp_path)
    server.start()
    probe = Celery("probe", broker=server.url)
    try:
        name = f"worker-brokeraway-{uuid.uuid4().hex[:6]}"
        worker = no_processes.start(name, worker_command(PYTHON, (QUEUE,), name, 1), REDIS_URL=server.url,
                                    CELERY_BROKER_URL=server.url)
        log = _log(no_processes, name)

        def consumes(n: int) -> bool:
            # A task no worker knows: the worker logs it as unregistered, which proves it took it off the queue.
            probe.send_task("tests.noop", queue=QUEUE, task_id=f"probe-{n}")
            return wait_until(lambda: f"probe-{n}" in read_text(log), timeout=3)

        assert wait_until(lambda: consumes(1), timeout=60, interval=0), read_text(log)[-3000:]
        server.stop()
        assert wait_for_line(log, "Connection to broker lost", timeout=60), read_text(log)[-3000:]
        server.start()  # empty, as a Redis without persistence comes back
        assert wait_until(lambda: consumes(2), timeout=120, interval=0), read_text(log)[-3000:]
        assert worker.poll() is None, read_text(log)[-3000:]
    finally:
        probe.close()
        server.stop()


def test_web_answers_503_while_the_database_is_away_and_recovers_by_itself(no_processes, make_customer,
                                                                          monkeypatch):
    from rest_framework.authtoken.models import Token

    from runtime.launcher import process_commands

    token = Token.objects.create(user=make_customer(balance_cents=70_000)).key
    port = free_port()
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    name = f"web-{uuid.uuid4().hex[:6]}"
    web = no_processes.start(name, process_commands("127.0.0.1", port, flow="saga")["web"])
    log = _log(no_processes, name)

    def get(path: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def serving() -> bool:
        try:
            return get("/api/v1/wallet")[0] == 200
        except OSError:
            return False

    assert wait_until(serving, timeout=60, interval=0.2), read_text(log)[-3000:]

    # PostgreSQL restarted between two requests. With DB_CONN_HEALTH_CHECKS the next request finds its
    # connection dead before using it and reconnects; without (the default, which saves a round trip per
    # request) it fails on the dead connection with a 503 and closes it. Either way the one after succeeds.
    terminate_connections()
    status, headers, body = get("/api/v1/wallet")
    expected = 200 if settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] else 503
    assert status == expected, (status, body)
    if status == 503:
        assert json.loads(body)["type"] == "/problems/dependency-unavailable", body
    status, _, body = get("/api/v1/wallet")
    assert status == 200, (status, body)

    with database_away():
        for path in ("/api/v1/wallet", "/api/v1/products", "/api/v1/wallet"):
            status, headers, body = get(path)
            assert status == 503, (path, status, body)
            assert headers.get("Content-Type") == "application/problem+json", headers
            assert headers.get("Retry-After") == "5", headers
            assert json.loads(body)["type"] == "/problems/dependency-unavailable", body

    status, _, body = get("/api/v1/wallet")
    assert (status, json.loads(body)["balance_cents"]) == (200, 70_000), (status, body)
    assert web.poll() is None, read_text(log)[-3000:]
