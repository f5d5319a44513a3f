"""The order flow as a choreography (ORDER_FLOW=choreography): the steps of orders/steps.py, as events.

Nothing here runs a step: the chain below is derived from ORDER_STEPS by sagas.choreography, which only needs
each step's events named. Adding a step to ORDER_STEPS adds its reaction (to the event of the step before
it) and its compensation (to the failure or undo of the step after it) here too.

    OrderPlaced        (orders, with the order)  -> inventory reserves -> StockReserved | StockRejected
    StockReserved      -> payments charges       -> PaymentCaptured | PaymentDeclined
    PaymentCaptured    -> shipping schedules     -> ShipmentScheduled | ShipmentRejected
    ShipmentScheduled  -> orders confirms        -> OrderConfirmed
    ShipmentRejected   -> payments refunds       -> PaymentRefunded
    PaymentDeclined | PaymentRefunded -> inventory releases -> StockReleased
    StockRejected | StockReleased     -> orders fails the order with the reason -> OrderFailed
    OrderTimedOut (the sweeper, orders/management/commands/choreography_sweeper.py) -> shipping cancels
        -> ShipmentCancelled -> payments refunds -> ...
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from orders.models import Order
from orders.services import PlaceOrder
from orders.steps import ORDER_STEPS, order_data
from sagas.choreography import (
    DONE,
    FAILED,
    UNDONE,
    Choreography,
    choreography_register,
    choreography_time_out,
    flows_quiet,
)
from shop.steps import Step

EVENT_NAMES = {
    "create_order": {DONE: "OrderPlaced", UNDONE: "OrderFailed"},
    "reserve_stock": {DONE: "StockReserved", FAILED: "StockRejected", UNDONE: "StockReleased"},
    "charge_payment": {DONE: "PaymentCaptured", FAILED: "PaymentDeclined", UNDONE: "PaymentRefunded"},
    "schedule_shipment": {DONE: "ShipmentScheduled", FAILED: "ShipmentRejected", UNDONE: "ShipmentCancelled"},
    "confirm_order": {DONE: "OrderConfirmed", FAILED: "OrderConfirmFailed"},
}


def order_choreography(*, name: str, steps: tuple[Step, ...]) -> Choreography:
    return choreography_register(Choreography(name=name, steps=steps, event_names=EVENT_NAMES,
                                              timed_out="OrderTimedOut", home="orders"))


ORDER_CHOREOGRAPHY = order_choreography(name="order", steps=ORDER_STEPS)


def _data(order: Order) -> dict:
    command = PlaceOrder(customer_id=order.customer_id, lines=[(line.sku, line.quantity) for line in order.lines.all()],
                         payment_token=order.payment_token, shipping_address=order.shipping_address)
    return {"order_id": order.pk, **order_data(command=command, amount_cents=order.total_cents)}


def orders_sweep(*, choreography: Choreography = ORDER_CHOREOGRAPHY, limit: int = 100) -> list[int]:
    """Fail, by events, the pending choreographed orders with no event for CHOREOGRAPHY_DEADLINE_SECONDS;
    returns their ids. Each one's undo chain starts with the sweeper's OrderTimedOut, so a late event of the
    order finds its step fenced; the order ends FAILED `timed_out`, its trace shows why."""
    deadline = timedelta(seconds=settings.CHOREOGRAPHY_DEADLINE_SECONDS)
    candidates = list(Order.objects.filter(status=Order.Status.PENDING, flow="choreography",
                                           created_at__lt=timezone.now() - deadline)
                      .order_by("id").prefetch_related("lines")[:limit])
    quiet = flows_quiet(choreography=choreography, flow_ids=[str(order.pk) for order in candidates],
                        deadline=deadline)
    timed_out = []
    for order in candidates:
        if str(order.pk) in quiet and choreography_time_out(
                choreography=choreography, flow_id=str(order.pk), data=_data(order),
                quiet_seconds=quiet[str(order.pk)]):
            timed_out.append(order.pk)
    return timed_out
