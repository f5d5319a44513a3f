"""Capped, jittered backoff and failure logging for long-running processes.

Every long-running process (the launcher's children, the outbox relay, the sweeper) waits between attempts
with `Backoff` and reports a dependency that stays away through `FailureLog`: the first failure at once,
then at most one line per period however many attempts fail, and one line when it is back. A PostgreSQL
restart costs a few log lines, not one per message or per loop. `keep_running` puts the two together around
the body of a process that must exit only when told to.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable


class Backoff:
    """Delays that double from `initial` up to `cap`, each drawn from [delay / 2, delay] ("equal jitter"):
    processes that failed together do not retry in step, and none waits much less than the schedule says."""

    def __init__(self, *, initial: float = 0.5, cap: float = 30.0, factor: float = 2.0) -> None:
        if not 0 < initial <= cap or factor < 1:
            raise ValueError(f"backoff needs 0 < initial <= cap and factor >= 1, got {initial}, {cap}, {factor}")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.attempts = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempts = 0


class FailureLog:
    """Logs the failures of one dependency: the first at once, then one summary per `period` seconds."""

    def __init__(self, logger: logging.Logger, what: str, *, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what
        self.period = period
        self.clock = clock
        self.failures = 0
        self._first_at = 0.0
        self._logged_at = 0.0
        self._unlogged = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException, *, retry_in: float, traceback: bool = False) -> None:
        """Count a failed attempt; `traceback` adds the stack to the lines that are logged (for errors that
        are not a dependency being away, which someone will have to read)."""
        now = self.clock()
        self.failures += 1
        exc_info = exc if traceback else None
        if self.failures == 1:
            self._first_at = self._logged_at = now
            self.logger.warning("%s: %s: %s; retrying in %.1f s", self.what, type(exc).__name__, one_line(exc),
                                retry_in, exc_info=exc_info)
        elif now - self._logged_at >= self.period:
            self.logger.warning("%s: still failing after %.0f s and %d attempts (%d since the last report): "
                                "%s: %s; retrying in %.1f s", self.what, now - self._first_at, self.failures,
                                self._unlogged + 1, type(exc).__name__, one_line(exc), retry_in, exc_info=exc_info)
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1
            self.logger.debug("%s: attempt %d failed: %s: %s; retrying in %.1f s", self.what, self.failures,
                              type(exc).__name__, one_line(exc), retry_in)

    def recovered(self) -> None:
        if self.failures:
            self.logger.warning("%s: recovered after %.1f s and %d failed attempts", self.what,
                                self.clock() - self._first_at, self.failures)
        self.failures = self._unlogged = 0


class Survivor:
    """Runs the body of a long-running process until `stop` is set, whatever it meets on the way.

    After a failure it calls `disconnect` (drop every connection, since a broken one fails forever), waits
    with backoff and runs the body again. The body calls `succeeded()` once it has reached its dependencies
    again, which logs the recovery and restarts the backoff from its first step.
    """

    def __init__(self, *, what: str, logger: logging.Logger, stop: threading.Event,
                 disconnect: Callable[[], None], expected: tuple[type[BaseException], ...],
                 backoff: Backoff | None = None, log_period: float = 60.0) -> None:
        self.stop = stop
        self.disconnect = disconnect
        self.expected = expected
        self.backoff = backoff or Backoff()
        self.failures = FailureLog(logger, what, period=log_period)
        self.logger = logger

    def succeeded(self) -> None:
        if self.failures.failing:
            self.failures.recovered()
            self.backoff.reset()

    def run(self, body: Callable[[], None]) -> None:
        """Call `body` again and again until `stop` is set (a body that returns normally counts as a success)."""
        while not self.stop.is_set():
            try:
                body()
            except Exception as exc:
                try:
                    self.disconnect()
                except Exception:
                    self.logger.debug("disconnect failed", exc_info=True)
                delay = self.backoff.next_delay()
                # A dependency being away is expected and explains itself; anything else is a bug to read.
                self.failures.failed(exc, retry_in=delay, traceback=not isinstance(exc, self.expected))
                self.stop.wait(delay)
            else:
                self.succeeded()


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or repr(exc)


def run_every(*, what: str, seconds: float, work: Callable[[], None], logger: logging.Logger,
              expected: tuple[type[BaseException], ...]) -> None:
    """The loop of a periodic process (a sweeper, the 2pc recovery): `work`, then a wait of `seconds`, until
    SIGTERM or SIGINT. A round that fails with one of `expected` (its database or broker away) drops every
    database connection and is tried again after a capped, jittered backoff (Survivor): the process exits only
    when told to."""
    import signal

    from django.db import connections

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def round_then_wait() -> None:
        work()
        stop.wait(seconds)

    logger.info("%s: every %ss", what, seconds)
    Survivor(what=what, logger=logger, stop=stop, disconnect=connections.close_all, expected=expected).run(
        round_then_wait)
    connections.close_all()
