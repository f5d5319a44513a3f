"""How a saga is declared: a list of steps, each an action and its compensation.

The engine knows nothing of orders: a definition is a name, the service whose database keeps its instances,
and a tuple of shop.steps.Step (the same tuple every other coordinator of the flow runs). Each step's action
and compensation become a Celery task named `<service>.<function name>` on the service's queue
(sagas.participants.participant_tasks); the step says how its transient failures are retried. Business
failures (shop.errors.BusinessError) always start compensation at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from shop.steps import Retry, Step, StepFunction

__all__ = ["Retry", "SagaDefinition", "Step", "all_definitions", "command_task", "get_definition", "register",
           "task_name"]


def task_name(step: Step, function: StepFunction) -> str:
    """The Celery task that runs `function` for `step`: `<service>.<function name>`, routed to the service's
    queue (e.g. inventory.reserve_stock). Messages already in outboxes and queues name their task this way."""
    return f"{step.service}.{function.__name__}"


def command_task(step: Step, direction: str) -> str | None:
    """The task of a step's action ("action") or compensation (any other direction); None when it has none."""
    function = step.action if direction == "action" else step.compensation
    return None if function is None else task_name(step, function)


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    service: str  # the service whose database keeps the saga instances (the orchestrator's home)
    steps: tuple[Step, ...]

    def step(self, index: int) -> Step:
        return self.steps[index]


_REGISTRY: dict[str, SagaDefinition] = {}


def register(definition: SagaDefinition) -> SagaDefinition:
    """Make `definition` known by its name, and give every function its steps name a participant task."""
    from sagas.participants import participant_tasks

    participant_tasks(definition)
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
