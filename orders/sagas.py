"""The order flow as an orchestrated saga (ORDER_FLOW=saga): the steps of orders/steps.py, as they are."""

from orders.steps import ORDER_STEPS
from sagas.definitions import SagaDefinition, register

# The orders service keeps the saga instances: its own steps (create, confirm) run inside the orchestrator's
# transaction, the others are commands to their service's queue.
ORDER_SAGA = register(SagaDefinition(name="order", service="orders", steps=ORDER_STEPS))
