"""The order's steps, declared once (orders/steps.py): the saga's tasks are generated from them under the names
messages already in outboxes and queues carry, and every function has the one signature coordinators call."""

from __future__ import annotations

import inspect

import pytest

from orders.sagas import ORDER_SAGA
from orders.steps import ORDER_STEPS
from sagas.definitions import SagaDefinition, command_task, register, task_name
from shop.celery import app
from shop.steps import Step

# The task names of the saga's commands before they were generated from the steps: they must not change.
TASKS = {
    "create_order": (None, "orders.reject_order"),
    "reserve_stock": ("inventory.reserve_stock", "inventory.release_stock"),
    "charge_payment": ("payments.charge", "payments.refund"),
    "schedule_shipment": ("shipping.schedule", "shipping.cancel"),
    "confirm_order": ("orders.confirm_order", None),
}


def test_the_saga_is_the_order_steps():
    assert ORDER_SAGA.steps is ORDER_STEPS
    assert [step.name for step in ORDER_STEPS] == list(TASKS)


def test_every_step_keeps_its_task_names_and_a_worker_knows_them():
    import sagas.tasks  # noqa: F401 (what a worker imports: it registers every definition's tasks)

    names = {step.name: (command_task(step, "action"), command_task(step, "compensation")) for step in ORDER_STEPS}
    assert names == TASKS
    assert {name for pair in TASKS.values() for name in pair if name} <= set(app.tasks)


def test_every_function_has_the_one_signature():
    functions = [f for step in ORDER_STEPS for f in (step.action, step.compensation, step.hold and step.hold.action)
                 if f]
    assert len(functions) == 9
    for function in functions:
        parameters = inspect.signature(function).parameters
        assert list(parameters) == ["data", "key", "failure", "fresh"], function
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), function


def test_two_functions_under_one_task_name_are_refused():
    def reserve_stock(*, data: dict, key: str, failure: dict | None, fresh: bool) -> None:
        pass

    impostor = Step("reserve_stock", "inventory", action=reserve_stock)
    assert task_name(impostor, reserve_stock) == "inventory.reserve_stock"
    with pytest.raises(ValueError, match=r"inventory\.reserve_stock"):
        register(SagaDefinition(name="impostor", service="orders", steps=(impostor,)))
