"""Retries around the outermost transaction on deadlock or serialization failure."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import OperationalError
from psycopg import errors as pg_errors

from shop.errors import ConcurrencyConflict

T = TypeVar("T")

RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable)


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and isinstance(exc.__cause__, RETRYABLE)


def retry_on_conflict(fn: Callable[[], T], *, attempts: int | None = None) -> T:
    """Run `fn` (which opens the outermost transaction) again when PostgreSQL aborts it as a deadlock
    victim or a serialization failure; after the last attempt raise ConcurrencyConflict (503)."""
    attempts = settings.DB_CONFLICT_RETRIES + 1 if attempts is None else attempts
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OperationalError as exc:
            if not is_conflict(exc):
                raise
            if attempt == attempts:
                raise ConcurrencyConflict(f"Gave up after {attempts} attempts: {exc.__cause__}") from exc
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")
