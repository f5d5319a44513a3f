"""Writes of the orders service."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db.models import QuerySet

from inventory.selectors import product_prices
from orders.models import Order, OrderLine
from shop.db import fetch
from shop.routers import service_alias


@dataclass(frozen=True)
class PlaceOrder:
    """What a customer asks for; every flow receives exactly this."""

    customer_id: int
    lines: Sequence[tuple[str, int]]
    payment_token: str
    shipping_address: Mapping[str, str] = field(default_factory=dict)
    # The Idempotency-Key the order was asked with, if any; unique per customer.
    request_key: str | None = None
    # Unit prices already read for these SKUs (the API reads them to validate the request); None: read them.
    unit_prices: Mapping[str, int] | None = None


class InvalidTransition(Exception):
    pass


class UnknownProducts(ValueError):
    def __init__(self, skus: Sequence[str]) -> None:
        super().__init__(f"Unknown SKU(s): {', '.join(skus)}")
        self.skus = list(skus)


def order_priced(*, command: PlaceOrder) -> PlaceOrder:
    """The command with the unit prices it will be placed at (read now unless it carries them already)."""
    if command.unit_prices is not None:
        return command
    return replace(command, unit_prices=_prices(command))


def order_total(*, command: PlaceOrder) -> int:
    """What the order will cost (the amount to authorize up front); pass a priced command to read nothing."""
    prices = _prices(command)
    return sum(prices[sku] * quantity for sku, quantity in command.lines)


def _prices(command: PlaceOrder) -> Mapping[str, int]:
    if command.unit_prices is not None:
        return command.unit_prices
    return product_prices(skus=[sku for sku, _ in command.lines])


# The order and its lines in one round trip. Timestamps come from the database clock (statement_timestamp(), the
# moment the statement started, like the ORM's timezone.now() for auto_now fields).
_CREATE_SQL = f"""
WITH placed AS (
    INSERT INTO {Order._meta.db_table} (customer_id, status, failure_reason, failure_detail, total_cents,
        payment_token, shipping_address, flow, request_key, created_at, updated_at)
    VALUES (%(customer_id)s, %(status)s, '', '', %(total_cents)s, %(payment_token)s, %(address)s::jsonb, %(flow)s,
            %(request_key)s, statement_timestamp(), statement_timestamp())
    RETURNING id, created_at
), lines AS (
    INSERT INTO {OrderLine._meta.db_table} (order_id, sku, quantity, unit_price_cents)
    SELECT placed.id, line.sku, line.quantity, line.unit_price_cents
    FROM placed, unnest(%(skus)s::text[], %(quantities)s::int[], %(prices)s::int[])
        AS line(sku, quantity, unit_price_cents)
)
SELECT id, created_at FROM placed
"""


def order_create(*, command: PlaceOrder, flow: str) -> Order:
    """Create the order PENDING with its lines priced from the catalogue (or the prices the command carries).

    The order comes back with its lines attached, so answering with it reads nothing back."""
    prices = _prices(command)
    unknown = sorted(sku for sku, _ in command.lines if sku not in prices)
    if unknown:
        raise UnknownProducts(unknown)
    lines = [OrderLine(sku=sku, quantity=qty, unit_price_cents=prices[sku]) for sku, qty in sorted(command.lines)]
    address = dict(command.shipping_address)
    total_cents = sum(line.total_cents for line in lines)
    [(order_id, created_at)] = fetch(using=service_alias("orders"), sql=_CREATE_SQL, params={
        "customer_id": command.customer_id, "status": Order.Status.PENDING, "total_cents": total_cents,
        "payment_token": command.payment_token, "address": json.dumps(address), "flow": flow,
        "request_key": command.request_key, "skus": [line.sku for line in lines],
        "quantities": [line.quantity for line in lines], "prices": [line.unit_price_cents for line in lines],
    })
    order = Order(id=order_id, customer_id=command.customer_id, status=Order.Status.PENDING, total_cents=total_cents,
                  payment_token=command.payment_token, shipping_address=address, flow=flow,
                  request_key=command.request_key, created_at=created_at, updated_at=created_at)
    order._state.adding = False
    for line in lines:
        line.order_id = order_id
    _attach_lines(order, lines)
    return order


def _attach_lines(order: Order, lines: list[OrderLine]) -> None:
    # What prefetch_related("lines") would have stored, from the rows just written: `order.lines.all()` then
    # answers from memory instead of a SELECT.
    cached = QuerySet(model=OrderLine)
    cached._result_cache = lines  # type: ignore[attr-defined]
    cached._prefetch_done = True  # type: ignore[attr-defined]
    order._prefetched_objects_cache = {"lines": cached}  # type: ignore[attr-defined]


_TRANSITION_SQL = f"""
UPDATE {Order._meta.db_table}
SET status = %(to)s, failure_reason = %(reason)s, failure_detail = %(detail)s, finalized_at = statement_timestamp(),
    updated_at = statement_timestamp()
WHERE id = %(order_id)s AND status = ANY(%(allowed_from)s)
RETURNING finalized_at
"""


def order_transition(*, order_id: int, to: str, reason: str = "", detail: str = "") -> datetime | None:
    """Move order `order_id` to status `to` by compare-and-set; refuses any move the table does not allow.

    Returns the time it moved; None when it was there already (repeating a transition is harmless)."""
    allowed_from = [src for src, targets in Order.TRANSITIONS.items() if to in targets]
    moved = fetch(using=service_alias("orders"), sql=_TRANSITION_SQL, params={
        "to": to, "reason": reason, "detail": detail[:300], "order_id": order_id, "allowed_from": allowed_from,
    })
    if moved:
        return moved[0][0]
    current = Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
    if current != to:
        raise InvalidTransition(f"order {order_id}: {current} -> {to} is not allowed")
    return None


def order_confirm(*, order_id: int) -> datetime | None:
    return order_transition(order_id=order_id, to=Order.Status.CONFIRMED)


def order_reject(*, order_id: int, reason: str, detail: str = "") -> None:
    order_transition(order_id=order_id, to=Order.Status.FAILED, reason=reason, detail=detail)


def orders_reset() -> None:
    Order.objects.all().delete()
