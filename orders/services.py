"""Writes of the orders service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


class InvalidTransition(Exception):
    pass


class UnknownProducts(ValueError):
    def __init__(self, skus: Sequence[str]) -> None:
        super().__init__(f"Unknown SKU(s): {', '.join(skus)}")
        self.skus = list(skus)


def order_create(*, command: PlaceOrder, flow: str) -> Order:
    """Create the order PENDING with its lines priced from the catalogue."""
    prices = product_prices(skus=[sku for sku, _ in command.lines])
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
    return order


def order_transition(*, order_id: int, to: str, reason: str = "", detail: str = "") -> None:
    """Move order `order_id` to status `to` by compare-and-set; refuses any move the table does not allow.

    Repeating a transition that already happened is harmless (the order is already there)."""
    allowed_from = [src for src, targets in Order.TRANSITIONS.items() if to in targets]
    updated = Order.objects.filter(pk=order_id, status__in=allowed_from).update(
        status=to, failure_reason=reason, failure_detail=detail[:300], finalized_at=timezone.now(),
        updated_at=timezone.now(),
    )
    if updated:
        return
    current = Order.objects.filter(pk=order_id).values_list("status", flat=True).first()
    if current != to:
        raise InvalidTransition(f"order {order_id}: {current} -> {to} is not allowed")


def order_confirm(*, order_id: int) -> None:
    order_transition(order_id=order_id, to=Order.Status.CONFIRMED)


def order_reject(*, order_id: int, reason: str, detail: str = "") -> None:
    order_transition(order_id=order_id, to=Order.Status.FAILED, reason=reason, detail=detail)


def orders_reset() -> None:
    Order.objects.all().delete()
