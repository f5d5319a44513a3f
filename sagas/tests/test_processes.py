"""The relay and the sweeper outlive their dependencies: real processes, a real PostgreSQL that stops accepting
connections and drops the ones it has, a real Redis that stops and starts again. They log the outage once,
keep trying with backoff, resume by themselves, and stop only when told to."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction

from sagas.models import OutboxMessage
from sagas.outbox import outbox_send
from sagas.processes import relay_command, sweeper_command
from shop.redis import get_redis
from shop.testing import wait_until
from shop.tests.outages import RedisServer, database_away, free_port, read_text, wait_for_line

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
