"""A flow's steps as data: what each step does and how it is undone, named once for every coordinator.

A flow is a tuple of `Step`s. Each names its service, the service's action and compensation, and how the
action's transient failures are retried; a coordinator (one per ORDER_FLOW: one transaction, a saga, ...)
decides how to run them. Every action and compensation has the same signature, so a coordinator needs to
know nothing of what a step does:

    def reserve_stock(*, data: dict, key: str, failure: dict | None, fresh: bool) -> dict | None

- `data`: what the flow is about (ids, lines, amounts) plus what earlier steps returned;
- `key`: the step's effect key, unique per flow instance and step, so repeating the step is harmless;
- `failure`: why the flow is being undone (compensations read it), None otherwise;
- `fresh`: the coordinator knows no effect under `key` can exist yet, so the function may skip looking;
- returns what later steps (and the coordinator) may read, merged into `data`, or None.

Nothing here is tied to a coordinator: the saga engine derives its definition from the same tuple
(sagas.definitions), the atomic flow calls the functions in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shop.errors import TransientError

StepFunction = Callable[..., dict[str, Any] | None]
# A hold's take/settle/release: (*, data, key) -> what later steps may read; (*, data) -> None.
HoldFunction = Callable[..., dict[str, Any] | None]


@dataclass(frozen=True)
class Retry:
    """Retry an action on these transient errors, with exponential backoff, then give up as `exhausted`."""

    attempts: int = 1
    backoff_seconds: float = 0.05
    on: tuple[type[TransientError], ...] = (TransientError,)
    exhausted: str = "step_failed"

    def delay(self, attempt: int) -> float:
        """Backoff before attempt number `attempt` (2, 3, ...)."""
        return self.backoff_seconds * 2 ** (attempt - 2)

    def retries(self, code: str) -> bool:
        return any(cls.code == code for cls in self.on)


@dataclass(frozen=True)
class Hold:
    """A step whose effect has a slow outside part (a card authorization), split for a coordinator that runs
    several steps in one transaction: it takes the hold before opening its transaction (so the slow call never
    holds a row lock), runs `action` inside it instead of the step's own action, then settles the hold after
    the commit or releases it after a rollback. A coordinator that gives the step a transaction of its own
    calls the step's action, which does all of it.

    take(*, data, key) -> dict merged into data; action: a StepFunction; settle(*, data), release(*, data).
    """

    take: HoldFunction
    action: StepFunction
    settle: HoldFunction
    release: HoldFunction


@dataclass(frozen=True)
class Step:
    name: str
    service: str
    # None: done by the coordinator as it accepts the request (creating the order), in that same transaction.
    action: StepFunction | None
    compensation: StepFunction | None = None
    retry: Retry = field(default_factory=Retry)
    hold: Hold | None = None
