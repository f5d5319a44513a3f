"""ORDER_FLOW=atomic: the whole order flow in one durable transaction.

A business failure at any step raises, PostgreSQL rolls every step back, and nothing is left behind.
Locks are taken in a fixed order (products by SKU inside stock_reserve, then the wallet), so concurrent
orders cannot deadlock each other; a deadlock or serialization failure from elsewhere is retried.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction

from inventory.services import stock_reserve
from orders.models import Order
from orders.services import PlaceOrder, order_confirm, order_create
from payments.services import payment_charge
from shipping.services import shipment_schedule
from shop.db import retry_on_conflict
from shop.errors import GatewayTimeout, PaymentUnavailable

FLOW = "atomic"


def place_order(command: PlaceOrder) -> Order:
    return retry_on_conflict(lambda: _place(command))


def _place(command: PlaceOrder) -> Order:
    with transaction.atomic(durable=True):
        order = order_create(command=command, flow=FLOW)
        key = f"order:{order.pk}"
        stock_reserve(order_id=order.pk, key=f"{key}:reserve", lines=command.lines)
        _charge(order, command, key=f"{key}:charge")
        shipment_schedule(order_id=order.pk, key=f"{key}:ship", address=command.shipping_address)
        order_confirm(order_id=order.pk)
    order.status = Order.Status.CONFIRMED
    return order


def _charge(order: Order, command: PlaceOrder, *, key: str) -> None:
    """Charge, retrying transient gateway faults a bounded number of times inside the transaction."""
    for attempt in range(1, settings.PAYMENT_ATTEMPTS + 1):
        try:
            payment_charge(order_id=order.pk, customer_id=command.customer_id, amount_cents=order.total_cents,
                           token=command.payment_token, key=key)
            return
        except GatewayTimeout as exc:
            if attempt == settings.PAYMENT_ATTEMPTS:
                raise PaymentUnavailable(f"The gateway failed {attempt} times: {exc.detail}") from exc
            time.sleep(0.005 * attempt)
