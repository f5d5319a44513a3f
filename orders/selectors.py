"""Reads of the orders service."""

from __future__ import annotations

from django.db.models import QuerySet

from orders.models import Order


def order_list_for_customer(*, customer_id: int) -> QuerySet[Order]:
    return Order.objects.filter(customer_id=customer_id).prefetch_related("lines").order_by("-id")


def order_get_for_customer(*, order_id: int, customer_id: int) -> Order | None:
    """The order, if it belongs to `customer_id`: another customer's order is indistinguishable from none."""
    return Order.objects.filter(pk=order_id, customer_id=customer_id).prefetch_related("lines").first()


def order_get(*, order_id: int) -> Order | None:
    return Order.objects.filter(pk=order_id).prefetch_related("lines").first()


def orders_for_audit() -> QuerySet[Order]:
    return Order.objects.only("id", "customer_id", "status", "total_cents", "flow").prefetch_related("lines")


def order_get_by_request_key(*, customer_id: int, request_key: str) -> Order | None:
    return Order.objects.filter(customer_id=customer_id, request_key=request_key).prefetch_related("lines").first()


def orders_pending_count(*, limit: int) -> int:
    """How many orders are PENDING, counting no further than `limit`: the cost is bounded by the limit, not by
    the size of the backlog or of the table (the status index finds them)."""
    return Order.objects.filter(status=Order.Status.PENDING).order_by()[:limit].count()
