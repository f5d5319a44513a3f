"""ORDER_FLOW=atomic: the whole order flow in one durable transaction, the card held before it.

1. Authorize the amount at the gateway, outside any transaction: a slow or retried gateway call never holds
   a row lock. The gateway key comes from the request's Idempotency-Key, so a retried request finds the
   authorization of its first attempt instead of holding the money twice.
2. One transaction: create the order, reserve stock, debit the wallet and record the payment, schedule the
   shipment, confirm. A business failure at any step raises, PostgreSQL rolls every step back, and nothing is
   left behind. Locks are taken in a fixed order (products by SKU inside stock_reserve, then the wallet), so
   concurrent orders cannot deadlock each other; a deadlock or serialization failure from elsewhere is retried.
3. Capture after the commit; void the authorization if the transaction failed.

Every key of the transaction is built from the order created in it, so no step looks for an earlier run of
itself: each statement does work.
"""

from __future__ import annotations

import hashlib
import time
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction

from inventory.services import stock_reserve
from orders.models import Order
from orders.services import PlaceOrder, order_confirm, order_create, order_priced, order_total
from payments.gateway import Authorization
from payments.services import payment_authorize, payment_capture, payment_record, payment_void
from shipping.services import shipment_schedule
from shop.db import retry_on_conflict
from shop.errors import GatewayTimeout, PaymentUnavailable

FLOW = "atomic"
# The order is final when place_order returns: the API answers 201.
SYNCHRONOUS = True


def place_order(command: PlaceOrder) -> Order:
    command = order_priced(command=command)  # the amount authorized is the amount the order records
    authorization = _authorize(command)
    try:
        order = retry_on_conflict(lambda: _place(command, authorization))
    except IntegrityError:
        # Another attempt under the same Idempotency-Key committed its order first, with this very
        # authorization (same gateway key): it is theirs to capture, not ours to void.
        raise
    except BaseException:
        # Rolled back: nothing was recorded against the hold.
        payment_void(authorization=authorization)
        raise
    payment_capture(authorization=authorization)
    return order


def _place(command: PlaceOrder, authorization: Authorization) -> Order:
    with transaction.atomic(durable=True):
        order = order_create(command=command, flow=FLOW)
        key = f"order:{order.pk}"
        stock_reserve(order_id=order.pk, key=f"{key}:reserve", lines=command.lines, key_is_new=True)
        payment_record(authorization=authorization, order_id=order.pk, customer_id=command.customer_id,
                       key=f"{key}:charge")
        shipment_schedule(order_id=order.pk, key=f"{key}:ship", address=command.shipping_address, key_is_new=True)
        confirmed_at = order_confirm(order_id=order.pk)
    order.status = Order.Status.CONFIRMED
    order.finalized_at = order.updated_at = confirmed_at
    return order


def _authorize(command: PlaceOrder) -> Authorization:
    """Authorize the order's total, retrying transient gateway faults a bounded number of times."""
    amount_cents = order_total(command=command)
    key = _gateway_key(command, amount_cents)
    for attempt in range(1, settings.PAYMENT_ATTEMPTS + 1):
        try:
            return payment_authorize(token=command.payment_token, amount_cents=amount_cents, key=key)
        except GatewayTimeout as exc:
            if attempt == settings.PAYMENT_ATTEMPTS:
                raise PaymentUnavailable(f"The gateway failed {attempt} times: {exc.detail}") from exc
            time.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


def _gateway_key(command: PlaceOrder, amount_cents: int) -> str:
    """The same request (customer, Idempotency-Key, amount) always gets the same key; a request without an
    Idempotency-Key cannot be recognised when retried, so it gets a key of its own."""
    if command.request_key is None:
        return f"order:{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{command.customer_id}\n{command.request_key}".encode()).hexdigest()[:32]
    return f"order:{digest}:{amount_cents}"
