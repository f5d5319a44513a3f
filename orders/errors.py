"""Why the orders API may refuse to take an order now, though the same request will succeed later."""

from __future__ import annotations

from shop.errors import TransientError


class Overloaded(TransientError):
    """More work than the shop can finish: the saga backlog is past SAGA_MAX_BACKLOG, or no database
    connection could be had. Transient, so an Idempotency-Key is released and the retry runs normally."""

    code = "overloaded"
    status = 503
    title = "Too much work in progress, try again shortly"
