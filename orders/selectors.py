"""Reads of the orders service."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet

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


def order_outcome_list(*, order_ids: Iterable[int]) -> list[tuple[int, str, datetime | None]]:
    """(id, status, finalized_at) of each of `order_ids` that exists: for the load tests' latency sums."""
    return list(Order.objects.filter(pk__in=list(order_ids)).values_list("pk", "status", "finalized_at"))


def orders_pending_exist(*, order_ids: Iterable[int]) -> bool:
    return Order.objects.filter(pk__in=list(order_ids), status=Order.Status.PENDING).exists()


def order_status_counts() -> list[tuple[str, str, int]]:
    """(status, failure reason, how many) over every order: for the load report."""
    rows = Order.objects.values("status", "failure_reason").annotate(n=Count("id")).order_by()
    return [(row["status"], row["failure_reason"], row["n"]) for row in rows]


def order_flow_status_counts() -> list[tuple[str, str, int]]:
    """(flow, status, how many) over every order: for /metrics."""
    rows = Order.objects.values("flow", "status").annotate(n=Count("id")).order_by()
    return [(row["flow"], row["status"], row["n"]) for row in rows]


def order_window_counts(*, since: datetime, until: datetime) -> dict[str, int]:
    """Orders placed in [since, until], and how many of them were final by `until` (a final status stamped at
    or before it), are final now, and failed: for the load bench."""
    placed = Order.objects.filter(created_at__gte=since, created_at__lte=until)
    final = ~Q(status=Order.Status.PENDING)
    return placed.aggregate(
        placed=Count("id"),
        final_by_end=Count("id", filter=final & (Q(finalized_at__lte=until) | Q(finalized_at__isnull=True))),
        final_now=Count("id", filter=final),
        failed_now=Count("id", filter=Q(status=Order.Status.FAILED)),
    )


# Flows whose every business change commits in one transaction: no reader can see an order half done.
ONE_TRANSACTION_FLOWS = frozenset({"atomic"})


def order_commit_spans() -> list[tuple[str, float, float]]:
    """(flow, window of inconsistency, POST to final) in seconds, for every final order, from the commit
    timestamps the services record, not from a client.

    The order is the first business change of every flow (created_at, in its transaction) and its final
    status the last one (finalized_at: confirmation after the last step, or the failure after the last
    compensation), so the span between them is how long stock, payment and shipment could be seen disagreeing
    with the order. A one-transaction flow's span is 0 by construction (everything commits at once); its
    POST-to-final is still the time the transaction took."""
    rows = Order.objects.filter(finalized_at__isnull=False).values_list("flow", "created_at", "finalized_at")
    spans = []
    for flow, created_at, finalized_at in rows:
        elapsed = max(0.0, (finalized_at - created_at).total_seconds())
        spans.append((flow, 0.0 if flow in ONE_TRANSACTION_FLOWS else elapsed, elapsed))
    return spans
