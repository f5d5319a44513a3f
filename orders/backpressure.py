"""Admission control for flows that finish orders in the background (saga mode).

An accepted order is a promise to finish it. When more orders are pending than the workers can finish in a
reasonable time (SAGA_MAX_BACKLOG), a new one is refused with 503 `overloaded` and Retry-After before anything
is written: the client keeps its order and retries, and its Idempotency-Key is released with the 503.

The check runs on every POST, so it is kept cheap: an indexed count that stops at the bound, made at most once
per SAGA_BACKLOG_CHECK_MS per process; between two counts the process adds the orders it accepted itself.
Several processes may each admit a few orders over the bound within one interval: the bound is a limit on
queueing, not an exact quota.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from orders.errors import Overloaded
from orders.selectors import orders_pending_count


class _Backlog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counted_at = float("-inf")
        self.pending = 0


_backlog = _Backlog()


def backlog_admit() -> None:
    """Raise Overloaded if the backlog of pending orders has reached SAGA_MAX_BACKLOG."""
    bound = settings.SAGA_MAX_BACKLOG
    if not bound:
        return
    now = time.monotonic()
    if now - _backlog.counted_at >= settings.SAGA_BACKLOG_CHECK_MS / 1000:
        pending = orders_pending_count(limit=bound)
        with _backlog.lock:
            _backlog.counted_at, _backlog.pending = now, pending
    if _backlog.pending >= bound:
        raise Overloaded(f"{_backlog.pending} orders are still being processed (the limit is {bound}); "
                         "nothing was placed, retry after the delay.")


def backlog_accepted() -> None:
    """Count an order this process just accepted, until the next count sees it."""
    with _backlog.lock:
        _backlog.pending += 1


def backlog_forget() -> None:
    """Count afresh on the next POST (tests, or after the bound changed)."""
    with _backlog.lock:
        _backlog.counted_at, _backlog.pending = float("-inf"), 0
