"""ORDER_FLOW=atomic: the order's steps (orders/steps.py) in one durable transaction, their holds around it.

1. Take every step's hold outside any transaction (the card authorization): a slow or retried gateway call
   never holds a row lock. The hold's key comes from the request's Idempotency-Key, so a retried request finds
   the authorization of its first attempt instead of holding the money twice.
2. One transaction: create the order, then run every step's action in order (a step with a hold runs the
   hold's action: the payment is recorded against the authorization). A business failure at any step raises,
   PostgreSQL rolls every step back, and nothing is left behind: a rollback is this mode's compensation.
   Locks are taken in a fixed order (products by SKU inside stock_reserve, then the wallet), so concurrent
   orders cannot deadlock each other; a deadlock or serialization failure from elsewhere is retried.
3. Settle the holds after the commit (capture); release them if the transaction failed (void).

Every step's key is built from the order created in the transaction (`fresh`), so no step looks for an
earlier run of itself: each statement does work.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from django.db import IntegrityError, transaction

from orders.models import Order
from orders.services import PlaceOrder, order_create, order_priced, order_total
from orders.steps import ORDER_STEPS, Data, order_data
from shop.db import retry_on_conflict
from shop.steps import Hold, Step

FLOW = "atomic"
# The order is final when place_order returns: the API answers 201.
SYNCHRONOUS = True


def place_order(command: PlaceOrder, *, steps: tuple[Step, ...] = ORDER_STEPS) -> Order:
    command = order_priced(command=command)  # the amount held is the amount the order records
    data = order_data(command=command, amount_cents=order_total(command=command))
    held = take_holds(steps, data, key=request_key(command))
    try:
        order = retry_on_conflict(lambda: _place(command, steps, data))
    except IntegrityError:
        # Another attempt under the same Idempotency-Key committed its order first, with these very holds
        # (same keys): they are theirs to settle, not ours to release.
        raise
    except BaseException:
        release_holds(held, data)  # rolled back: nothing was recorded against the holds
        raise
    for hold in held:
        hold.settle(data=data)
    return order


def take_holds(steps: tuple[Step, ...], data: Data, *, key: str) -> list[Hold]:
    """Take each step's hold, in step order, adding what it returns to `data`; on a failure release the ones
    taken before it."""
    held: list[Hold] = []
    try:
        for hold in (step.hold for step in steps if step.hold is not None):
            data.update(hold.take(data=data, key=key) or {})
            held.append(hold)
    except BaseException:
        release_holds(held, data)
        raise
    return held


def release_holds(held: list[Hold], data: Data) -> None:
    for hold in reversed(held):
        hold.release(data=data)


def _place(command: PlaceOrder, steps: tuple[Step, ...], asked: Data) -> Order:
    with transaction.atomic(durable=True):
        # The steps without an action are this: the order, created PENDING in the transaction.
        order = order_create(command=command, flow=FLOW)
        data = {"order_id": order.pk, **asked}
        for step in steps:
            action = step.action if step.hold is None else step.hold.action
            if action is not None:
                result = action(data=data, key=f"order:{order.pk}:{step.name}", failure=None, fresh=True)
                data.update(result or {})
    order.status = Order.Status.CONFIRMED
    order.finalized_at = order.updated_at = datetime.fromisoformat(data["confirmed_at"])
    return order


def request_key(command: PlaceOrder) -> str:
    """The same request (customer, Idempotency-Key) always gets the same key; a request without an
    Idempotency-Key cannot be recognised when retried, so it gets a key of its own."""
    if command.request_key is None:
        return f"order:{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{command.customer_id}\n{command.request_key}".encode()).hexdigest()[:32]
    return f"order:{digest}"
