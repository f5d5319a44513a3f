"""ORDER_FLOW=choreography: create the order PENDING and emit OrderPlaced in one local transaction.

The API answers 202 at once, as in saga mode. No coordinator follows the order: each service reacts to the
event of the step before its own and emits its own (orders/choreography.py, derived from orders/steps.py by
sagas.choreography), through its outbox, the relay and its queue, until orders confirms or, after a failure
undone in reverse by the services that had acted, fails the order with the reason. While the backlog of
pending orders is at its bound, no order is accepted (orders/backpressure.py).
"""

from __future__ import annotations

from django.db import transaction

from orders.backpressure import backlog_accepted, backlog_admit
from orders.choreography import ORDER_CHOREOGRAPHY
from orders.models import Order
from orders.services import PlaceOrder, order_create
from orders.steps import order_data
from sagas.choreography import Choreography, choreography_start
from shop.routers import service_alias

FLOW = "choreography"
# The order continues in the background: the API answers 202 + Location, first try or repeat.
SYNCHRONOUS = False


def place_order(command: PlaceOrder, *, choreography: Choreography = ORDER_CHOREOGRAPHY) -> Order:
    backlog_admit()
    with transaction.atomic(using=service_alias("orders"), durable=True):
        order = order_create(command=command, flow=FLOW)
        choreography_start(choreography=choreography, flow_id=str(order.pk),
                           data={"order_id": order.pk, **order_data(command=command, amount_cents=order.total_cents)})
    backlog_accepted()
    return order
