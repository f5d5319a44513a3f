"""ORDER_FLOW=saga: create the order PENDING and start its saga in one local transaction.

The API answers 202 at once; Celery workers run the remaining steps of the order (orders/steps.py, as the
saga orders/sagas.py) and the order ends CONFIRMED or FAILED with the reason. Nothing is published from
here: the saga's first command is an outbox row committed with the order, and the relay publishes it. While
the backlog of pending orders is at its bound, no order is accepted (orders/backpressure.py).
"""

from __future__ import annotations

from django.db import transaction

from orders.backpressure import backlog_accepted, backlog_admit
from orders.models import Order
from orders.sagas import ORDER_SAGA
from orders.services import PlaceOrder, order_create
from orders.steps import order_data
from sagas.definitions import SagaDefinition
from sagas.engine import saga_start
from shop.routers import service_alias

FLOW = "saga"
# The order continues in the background: the API answers 202 + Location, first try or repeat.
SYNCHRONOUS = False


def place_order(command: PlaceOrder, *, definition: SagaDefinition = ORDER_SAGA) -> Order:
    backlog_admit()
    with transaction.atomic(using=service_alias("orders"), durable=True):
        order = order_create(command=command, flow=FLOW)
        saga_start(definition=definition,
                   data={"order_id": order.pk, **order_data(command=command, amount_cents=order.total_cents)})
    backlog_accepted()
    return order
