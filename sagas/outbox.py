"""The transactional outbox and its relay.

`outbox_send` writes a message in the caller's transaction, so the message exists if and only if the
change it announces was committed (invariant I5). A trigger on the table NOTIFYs `sagas_outbox` on
commit; the relay LISTENs, wakes at once, claims a batch with FOR UPDATE SKIP LOCKED (so several relays
can run side by side), publishes it to Celery, and marks it published in the same transaction. A relay
that dies between publishing and committing publishes the batch again later: consumers deduplicate.
Polling every OUTBOX_POLL_SECONDS is only the safety net.

A batch is published as Celery's `send_task` would send each message (protocol 2, task id = the outbox
message id, the queue's own routing), without its per-call work: one producer connection for the relay's life,
and on Redis the whole batch in one pipeline round trip (kombu's `Producer.batch`). On RabbitMQ every publish
waits for the broker's confirm (`confirm_publish`), so a row is marked published only once the broker has it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Min
from django.utils import timezone
from kombu import Producer, Queue

from monitoring import metrics
from sagas.models import OutboxMessage
from shop.backoff import Survivor
from shop.db import fetch
from shop.errors import broker_unavailable_errors, database_unavailable_errors

logger = logging.getLogger(__name__)

CHANNEL = "sagas_outbox"
METRICS_FLUSH_SECONDS = 1.0
# RabbitMQ: a publish whose confirm has not come by then fails its batch (published again later).
CONFIRM_TIMEOUT_SECONDS = 10.0
RECHECK_SECONDS = 0.05
NEXT_DUE_SQL = ("SELECT EXTRACT(EPOCH FROM min(available_at) - clock_timestamp())::float "
                "FROM sagas_outboxmessage WHERE published_at IS NULL")
CLAIM_SQL = """
UPDATE sagas_outboxmessage SET published_at = now(), publish_count = publish_count + 1
WHERE id IN (
    SELECT id FROM sagas_outboxmessage
    WHERE published_at IS NULL AND available_at <= now()
    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
)
RETURNING id, message_id, queue, task, payload
"""


# The same insert as `outbox_send`, for writers that fold it into one statement with the change it announces
# (the orchestrator's move, a participant's reply): one row per message (message id, queue, task, payload as
# JSON text, seconds before it is due).
OUTBOX_INSERT_SQL = ("INSERT INTO sagas_outboxmessage (message_id, queue, task, payload, created_at, available_at, "
                     "publish_count) VALUES {rows}")
OUTBOX_ROW_SQL = "(%s::uuid, %s, %s, %s::jsonb, now(), now() + make_interval(secs => %s), 0)"


def outbox_insert_sql(rows: int) -> str:
    return OUTBOX_INSERT_SQL.format(rows=", ".join([OUTBOX_ROW_SQL] * rows))


def outbox_send(*, using: str, queue: str, task: str, payload: dict, message_id: uuid.UUID | str,
                delay_seconds: float = 0.0) -> OutboxMessage:
    """Add a message to the outbox of database `using`, inside the caller's transaction."""
    now = timezone.now()
    return OutboxMessage.objects.using(using).create(
        message_id=message_id, queue=queue, task=task, payload=payload,
        available_at=now + timedelta(seconds=delay_seconds) if delay_seconds else now,
    )


class Relay:
    """Publishes the outbox of one database to Celery until stopped.

    It survives its dependencies: when PostgreSQL or the broker goes away (restart, network), the failed batch
    rolls back (nothing is marked published that was not), every connection is dropped, and the relay waits
    with capped, jittered backoff, reconnects and carries on, logging the outage once per period. It exits
    only when `stop_event` is set.
    """

    def __init__(self, *, using: str, batch_size: int | None = None, poll_seconds: float | None = None) -> None:
        from shop.celery import app

        self.using = using
        self.app = app
        self.batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.OUTBOX_POLL_SECONDS
        self.published = 0
        self.stop_event = threading.Event()
        self._producer: Producer | None = None
        self._listener: psycopg.Connection | None = None
        self._queues: dict[str, Queue] = {}
        self._uncounted, self._counted_at = 0, 0.0
        # Persistent, as Celery sends tasks (kombu maps "persistent" / "transient" to 2 / 1).
        self.delivery_mode = app.conf.task_default_delivery_mode

    def producer(self) -> Producer:
        """The relay's one broker connection, opened on first use and kept until it breaks."""
        if self._producer is None:
            self._producer = self.app.amqp.Producer(self.app.connection_for_write(), auto_declare=False)
        return self._producer

    def publish_batch(self) -> int:
        """Claim, publish and mark one batch of due messages; return how many.

        Claiming and marking is one statement; the publish happens before the commit, so a crash in between
        leaves the batch unpublished (to be published again), never marked but lost. A publish that fails
        (broker away) raises out of the transaction, which rolls the claim back.
        """
        with transaction.atomic(using=self.using), connections[self.using].cursor() as cursor:
            cursor.execute(CLAIM_SQL, [self.batch_size])
            batch = sorted(cursor.fetchall())
            if not batch:
                return 0
            self._fault("crash-after-claim")
            copies = 2 if settings.OUTBOX_RELAY_FAULT == "publish-twice" else 1
            producer = self.producer()
            # On Redis the batch is buffered and sent in one pipeline when the block ends (a failure discards
            # it and raises, and the claim rolls back); other transports publish at once, each confirmed.
            with producer.batch(max_size=2 * copies * len(batch)):
                for _, message_id, queue, task, payload in batch:
                    if isinstance(payload, str):
                        payload = json.loads(payload)
                    for _ in range(copies):
                        self.publish(producer, task=task, task_id=str(message_id), payload=payload, queue=queue)
            self._fault("crash-after-publish")
        self.published += len(batch)
        self._count_published(len(batch))
        return len(batch)

    def _count_published(self, count: int) -> None:
        """Add to /metrics' relay count (in Redis) at most once a second, not once a batch."""
        self._uncounted += count
        now = time.monotonic()
        if self._uncounted and now - self._counted_at >= METRICS_FLUSH_SECONDS:
            metrics.count("relay_published", self._uncounted, database=self.using)
            self._uncounted, self._counted_at = 0, now

    def publish(self, producer: Producer, *, task: str, task_id: str, payload: dict, queue: str) -> None:
        """Publish one task message exactly as `app.send_task(task, args=[payload], queue=queue,
        task_id=task_id)` does (sagas/tests/test_relay.py compares the two), less the work that is the same for
        every message: the task registry and router lookups, the retry wrapper (a failed publish fails the
        batch, which is published again), a new Redis client per message."""
        headers, properties, body, _ = self.app.amqp.as_task_v2(task_id, task, args=[payload],
                                                                  reply_to=self.app.thread_oid, ignore_result=None)
        producer.publish(body, exchange="", routing_key=queue, serializer="json", compression=None, retry=False,
                         delivery_mode=self.delivery_mode, declare=[self._queue(queue)], headers=headers,
                         confirm_timeout=CONFIRM_TIMEOUT_SECONDS, **properties)

    def _queue(self, name: str) -> Queue:
        # Declared once per connection (kombu remembers it): on RabbitMQ a message routed to a queue nobody
        # declared yet would be dropped.
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = self.app.amqp.queues[name]
        return queue

    @staticmethod
    def _fault(point: str) -> None:
        if point == settings.OUTBOX_RELAY_FAULT:
            logger.warning("outbox relay: injected fault %s, exiting without commit", point)
            os._exit(17)

    def drain(self) -> int:
        total = 0
        while not self.stop_event.is_set():
            count = self.publish_batch()
            total += count
            if count < self.batch_size:
                break
        return total

    def _seconds_to_next_due(self) -> float:
        """How long until the earliest delayed message becomes due (or the poll interval). Asked up to 20 times a
        second while busy: hand-written (shop.db.fetch), the ORM's aggregate cost a tenth of the relay's CPU."""
        [(seconds,)] = fetch(using=self.using, sql=NEXT_DUE_SQL, params=[])
        if seconds is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, seconds))

    def _listen(self) -> psycopg.Connection:
        params = connections[self.using].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        conn = psycopg.connect(**params, autocommit=True)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def close(self) -> None:
        """Drop every connection: the LISTEN one, the database one and the broker one (each may be broken)."""
        listener, self._listener = self._listener, None
        producer, self._producer = self._producer, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()
        with contextlib.suppress(Exception):
            connections[self.using].close()
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.connection.close()

    def _serve(self, survivor: Survivor) -> None:
        """Listen and publish until stopped; raises when a dependency fails."""
        self._listener = self._listen()
        next_due_at, checked_at = time.monotonic(), 0.0
        while not self.stop_event.is_set():
            published = self.drain()
            survivor.succeeded()
            if not published:
                self._count_published(0)
            now = time.monotonic()
            # While busy, NOTIFYs keep the relay awake; look for delayed messages only when idle or every
            # RECHECK_SECONDS, which saves a query per wake-up.
            if not published or now - checked_at > RECHECK_SECONDS:
                next_due_at, checked_at = now + self._seconds_to_next_due(), now
            wait = max(0.0, min(next_due_at, now + self.poll_seconds) - now)
            if not published:
                # A due message another relay holds locked: give it a moment instead of spinning.
                wait = max(wait, 0.005)
            if wait > 0:
                # Wakes on the first NOTIFY, or after `wait` at the latest.
                for _ in self._listener.notifies(timeout=wait, stop_after=1):
                    pass
                # Then takes every NOTIFY already waiting: their commits came before the claim that follows,
                # which publishes all their rows, so a burst of commits costs one claim instead of one each.
                for _ in self._listener.notifies(timeout=0):
                    pass

    @staticmethod
    def expected_errors() -> tuple[type[BaseException], ...]:
        """What a relay waits out (reconnecting with backoff) instead of dying: its database or broker away."""
        return database_unavailable_errors() + broker_unavailable_errors()

    def run(self) -> None:
        logger.info("outbox relay on %s: listening on %s, polling every %ss", self.using, CHANNEL,
                    self.poll_seconds)
        survivor = Survivor(what=f"outbox relay on {self.using}", logger=logger, stop=self.stop_event,
                            disconnect=self.close, expected=self.expected_errors())
        try:
            survivor.run(lambda: self._serve(survivor))
        finally:
            self.close()


def outbox_backlog(*, using: str) -> tuple[int, float]:
    """(pending messages, age in seconds of the oldest pending one) in database `using`."""
    pending = OutboxMessage.objects.using(using).filter(published_at__isnull=True)
    oldest = pending.aggregate(at=Min("created_at"))["at"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    return pending.count(), age


def outbox_purge(*, using: str, older_than: timedelta) -> int:
    """Delete published messages older than `older_than`; they are only history."""
    cutoff = timezone.now() - older_than
    deleted, _ = OutboxMessage.objects.using(using).filter(published_at__lt=cutoff).delete()
    return deleted


class OutboxRetention:
    """What a sweeper (saga or choreography: whichever the mode runs) does for the outboxes on the side: every
    `every_seconds`, purge in every database the published messages older than OUTBOX_RETENTION_HOURS."""

    def __init__(self, *, every_seconds: float = 600.0) -> None:
        self.every_seconds = every_seconds
        self._purged_at = float("-inf")

    def maybe_purge(self) -> None:
        if time.monotonic() - self._purged_at < self.every_seconds:
            return
        retention = timedelta(hours=settings.OUTBOX_RETENTION_HOURS)
        for alias in settings.DATABASES:
            outbox_purge(using=alias, older_than=retention)
        self._purged_at = time.monotonic()

