"""Reads of the inventory service."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import router
from django.db.models import QuerySet, Sum

from inventory.models import Product, Reservation
from shop.db import fetch


def product_list() -> QuerySet[Product]:
    return Product.objects.order_by("sku")


def product_prices(*, skus: Iterable[str]) -> dict[str, int]:
    """Price in cents of each known SKU among `skus`; unknown SKUs are absent from the result.

    Read by every order before anything is written (to validate and to price it): hand-written, see
    shop.db.fetch."""
    return dict(fetch(using=router.db_for_read(Product), sql=_PRICES_SQL, params=[list(skus)]))


_PRICES_SQL = f"SELECT sku, price_cents FROM {Product._meta.db_table} WHERE sku = ANY(%s)"


def reservation_for_order(*, order_id: int) -> Reservation | None:
    return Reservation.objects.filter(order_id=order_id).first()


def reservations_held() -> dict[int, list[dict]]:
    """Lines held by every live reservation, by order id."""
    return dict(Reservation.objects.filter(status=Reservation.Status.HELD).values_list("order_id", "lines"))


def stock_totals() -> dict[str, dict[str, int]]:
    """For the audit: per SKU, units received, on hand, and held by reservations."""
    totals = {
        sku: {"received": received, "on_hand": on_hand, "held": 0}
        for sku, received, on_hand in Product.objects.values_list("sku", "received", "on_hand")
    }
    for lines in reservations_held().values():
        for line in lines:
            totals.setdefault(line["sku"], {"received": 0, "on_hand": 0, "held": 0})["held"] += line["quantity"]
    return totals


def stock_on_hand_total() -> int:
    return Product.objects.aggregate(total=Sum("on_hand"))["total"] or 0
