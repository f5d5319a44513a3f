"""How a saga is declared: a list of steps, each an action and its compensation.

The engine knows nothing of orders; a definition names Celery tasks (participants) by name and says,
per step, how transient failures are retried. Business failures (shop.errors.BusinessError) always start
compensation at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shop.errors import TransientError


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
class Step:
    name: str
    service: str
    action: str | None  # Celery task name; None for a step done in the transaction that starts the saga
    compensation: str | None = None
    retry: Retry = field(default_factory=Retry)


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    service: str  # the service whose database keeps the saga instances (the orchestrator's home)
    steps: tuple[Step, ...]

    def step(self, index: int) -> Step:
        return self.steps[index]


_REGISTRY: dict[str, SagaDefinition] = {}


def register(definition: SagaDefinition) -> SagaDefinition:
    _REGISTRY[definition.name] = definition
    return definition


def _discover() -> None:
    # Definitions register on import of their app's `sagas` module; a process may not have imported it yet.
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("sagas")


def get_definition(name: str) -> SagaDefinition:
    if name not in _REGISTRY:
        _discover()
    return _REGISTRY[name]


def all_definitions() -> list[SagaDefinition]:
    _discover()
    return list(_REGISTRY.values())
