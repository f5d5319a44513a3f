"""kombu's Redis transport, with one fix for a broker that goes away while a worker holds messages.

When a Celery worker loses Redis while it holds unacknowledged messages, kombu closes the channel and, on
the way, tries to put those messages back in their queues at once, through a connection that is already
gone. The AttributeError that follows escapes kombu's own error handling and stops the worker
("Unrecoverable error: 'NoneType' object has no attribute 'hostname'") instead of letting it reconnect.
The messages are safe where they are: Redis keeps them in its unacked hash, and a worker restores them once
the visibility timeout has passed. So this transport lets that one step give up, and the worker reconnects
as it does after any other connection loss. Selected by shop/settings/celery.py for redis:// brokers.
"""

from __future__ import annotations

import logging

from kombu.transport import redis

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    def restore_unacked_once(self, stderr: object = None) -> object:
        try:
            return super().restore_unacked_once(stderr)
        except AttributeError:
            logger.warning("broker connection gone while closing: %s unacknowledged message(s) stay in Redis "
                           "and come back after the visibility timeout", len(self._delivered))
            return None


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
