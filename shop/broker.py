"""How Celery workers meet a broker that goes away: they reconnect promptly, and they survive it.

A worker that lost its broker tries again with kombu's default waits, 2 s growing by 2 s up to 30 s: after a
minute-long outage it may come back ten seconds or more after the broker did, while the saga engine is
counting the silence of the commands the relay has published again. `Consumer` caps those waits at 2 s.

kombu's Redis transport, with one client per channel (below) and one fix for a broker that goes away while
a worker holds messages (the same holds for acknowledging a message through a connection that is gone):

When a Celery worker loses Redis while it holds unacknowledged messages, kombu closes the channel and, on
the way, tries to put those messages back in their queues at once, through a connection that is already
gone. The AttributeError that follows escapes kombu's own error handling and stops the worker
("Unrecoverable error: 'NoneType' object has no attribute 'hostname'") instead of letting it reconnect.
The messages are safe where they are: Redis keeps them in its unacked hash, and a worker restores them once
the visibility timeout has passed. So this transport lets that one step give up, and the worker reconnects
as it does after any other connection loss. Selected by shop/settings/celery.py for redis:// brokers.
"""

from __future__ import annotations

import functools
import logging

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu import Connection
from kombu.transport import redis

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    """Acknowledging, rejecting or restoring through a connection that is already gone must not stop the
    worker: the message stays in Redis's unacked hash and comes back after the visibility timeout (its
    consumer's inbox recognises it)."""

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except AttributeError:
            logger.warning("broker connection gone: message %s not acknowledged; it comes back after the "
                           "visibility timeout", delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            logger.warning("broker connection gone: message %s not rejected; it comes back after the "
                           "visibility timeout", delivery_tag)

    def restore_unacked_once(self, stderr: object = None) -> object:
        try:
            return super().restore_unacked_once(stderr)
        except AttributeError:
            logger.warning("broker connection gone while closing: %s unacknowledged message(s) stay in Redis "
                           "and come back after the visibility timeout", len(self._delivered))
            return None


class Channel(redis.Channel):
    """kombu's Redis channel, with one client for its synchronous calls.

    kombu builds a new `redis.Redis` (its table of response callbacks included) for every publish,
    acknowledgement and unacked-hash update, though all of them share one connection pool: measured with
    py-spy, a tenth of a worker's consumer process went into building those clients. This channel keeps the one
    it built for as long as its pool lives (kombu replaces the pool after a connection loss, and then the
    client with it)."""

    QoS = QoS
    _sync_client: object | None = None

    def _create_client(self, asynchronous: bool = False):  # type: ignore[no-untyped-def]
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:  # type: ignore[attr-defined]
            client = self._sync_client = super()._create_client()
        return client


class Transport(redis.Transport):
    Channel = Channel


RECONNECT_WAITS = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}


class Consumer(CeleryConsumer):
    """Celery's worker consumer, reconnecting to the broker with waits of at most two seconds."""

    def ensure_connected(self, conn: Connection) -> Connection:
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_WAITS)
        return super().ensure_connected(conn)
