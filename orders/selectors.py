"""Reads of the orders service."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from orders.models import Order

# The states a reader outside orders compares with (the audit, the load report), without the model.
OrderStatus = Order.Status


@dataclass(frozen=True)
class OrderSummary:
    """What a cross-service check needs of an order: who, how much, how it ran, where it stands, its lines."""

    id: int
    customer_id: int
    status: str
    total_cents: int
    flow: str
    lines: tuple[tuple[str, int], ...]  # (sku, quantity), sorted


def order_list_for_customer(*, customer_id: int) -> QuerySet[Order]:
    return Order.objects.filter(customer_id=customer_id).prefetch_related("lines").order_by("-id")


def order_get_for_customer(*, order_id: int, customer_id: int) -> Order | None:
    """The order, if it belongs to `customer_id`: another customer's order is indistinguishable from none."""
    return Order.objects.filter(pk=order_id, customer_id=customer_id).prefetch_related("lines").first()


def order_get(*, order_id: int) -> Order | None:
    return Order.objects.filter(pk=order_id).prefetch_related("lines").first()


def order_summary_list() -> list[OrderSummary]:
    """Every order, as plain data (two queries: the orders, then all their lines)."""
    orders = Order.objects.only("id", "customer_id", "status", "total_cents", "flow").prefetch_related("lines")
    return [
        OrderSummary(id=order.pk, customer_id=order.customer_id, status=order.status, total_cents=order.total_cents,
                     flow=order.flow, lines=tuple(sorted((line.sku, line.quantity) for line in order.lines.all())))
        for order in orders
    ]


def order_get_by_request_key(*, customer_id: int, request_key: str) -> Order | None:
    return Order.objects.filter(customer_id=customer_id, request_key=request_key).prefetch_related("lines").first()


def orders_pending_count(*, limit: int) -> int:
    """How many orders are PENDING, counting no further than `limit`: the cost is bounded by the limit, not by
    the size of the backlog or of the table (the status index finds them)."""
    return Order.objects.filter(status=Order.Status.PENDING).order_by()[:limit].count()
