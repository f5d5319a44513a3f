"""Writes of the orders service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from inventory.selectors import product_prices
from orders.models import Order, OrderLine
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


def order_create(*, command: PlaceOrder, flow: str) -> Order:
    """Create the order PENDING with its lines priced from the catalogue (or the prices the command carries).

    The order comes back with its lines attached, so answering with it reads nothing back."""
    prices = _prices(command)
    unknown = sorted(sku for sku, _ in command.lines if sku not in prices)
    if unknown:
        raise UnknownProducts(unknown)
    lines = [OrderLine(sku=sku, quantity=qty, unit_price_cents=prices[sku]) for sku, qty in sorted(command.lines)]
    with transaction.atomic(using=service_alias("orders"), savepoint=False):
        order = Order.objects.create(
            customer_id=command.customer_id,
            total_cents=sum(line.total_cents for line in lines),
            payment_token=command.payment_token,
            shipping_address=dict(command.shipping_address),
            flow=flow,
            request_key=command.request_key,
        )
        for line in lines:
            line.order = order
        OrderLine.objects.bulk_create(lines)
    _attach_lines(order, lines)
    return order


def _attach_lines(order: Order, lines: list[OrderLine]) -> None:
    # What prefetch_related("lines") would have stored, from the rows just written: `order.lines.all()` then
    # answers from memory instead of a SELECT.
    cached = OrderLine.objects.filter(order=order)
    cached._result_cache = lines  # type: ignore[attr-defined]
    cached._prefetch_done = True  # type: ignore[attr-defined]
    order._prefetched_objects_cache = {"lines": cached}  # type: ignore[attr-defined]


def order_transition(*, order_id: int, to: str, reason: str = "", detail: str = "") -> datetime | None:
    """Move order `order_id` to status `to` by compare-and-set; refuses any move the table does not allow.

    Returns the time it moved; None when it was there already (repeating a transition is harmless)."""
    allowed_from = [src for src, targets in Order.TRANSITIONS.items() if to in targets]
    now = timezone.now()
    updated = Order.objects.filter(pk=order_id, status__in=allowed_from).update(
        status=to, failure_reason=reason, failure_detail=detail[:300], finalized_at=now, updated_at=now,
    )
    if updated:
        return now
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
