"""Writes of the inventory service: stock is only ever moved by conditional UPDATEs."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from inventory.models import Product, Reservation
from shop.db import fetch
from shop.errors import OutOfStock
from shop.routers import service_alias

Lines = Iterable[tuple[str, int]]


def _sorted_lines(lines: Lines) -> list[dict]:
    # Locking product rows in SKU order is what keeps concurrent orders free of deadlocks.
    return [{"sku": sku, "quantity": quantity} for sku, quantity in sorted(lines)]


# Every line's stock moved and the reservation written in one round trip. `locked` takes the product rows in
# SKU order (the lock is taken as each sorted row is returned), which keeps concurrent orders free of
# deadlocks; a row short of stock is neither locked nor moved, and then no reservation is written: the caller
# sees a line missing from `moved` and raises, and its transaction undoes the lines that did move.
_RESERVE_SQL = f"""
WITH wanted AS (
    SELECT * FROM unnest(%(skus)s::text[], %(quantities)s::int[]) AS wanted(sku, quantity)
), locked AS (
    SELECT product.id, wanted.quantity FROM {Product._meta.db_table} product JOIN wanted USING (sku)
    WHERE product.on_hand >= wanted.quantity
    ORDER BY product.sku FOR UPDATE OF product
), moved AS (
    UPDATE {Product._meta.db_table} product SET on_hand = product.on_hand - locked.quantity
    FROM locked WHERE product.id = locked.id
    RETURNING product.sku
), reservation AS (
    INSERT INTO {Reservation._meta.db_table} (order_id, key, status, lines, created_at)
    SELECT %(order_id)s, %(key)s, %(status)s, %(lines)s::jsonb, statement_timestamp()
    WHERE (SELECT count(*) FROM moved) = cardinality(%(skus)s::text[])
    RETURNING id, created_at
)
SELECT (SELECT array_agg(sku) FROM moved), reservation.id, reservation.created_at
FROM (SELECT 1) AS one LEFT JOIN reservation ON true
"""


def stock_reserve(*, order_id: int, key: str, lines: Lines, key_is_new: bool = False) -> Reservation:
    """Hold `lines` for `order_id`. Raises OutOfStock and changes nothing if any line cannot be met.

    Idempotent by `key`: a repeat returns the existing reservation. A caller whose key cannot have been used
    yet (built from an order created in its own transaction) passes `key_is_new` and saves the lookup.
    """
    if not key_is_new:
        existing = Reservation.objects.filter(key=key).first()
        if existing is not None:
            return existing
    sorted_lines = _sorted_lines(lines)
    with transaction.atomic(using=service_alias("inventory"), savepoint=False):
        [(moved, reservation_id, created_at)] = fetch(using=service_alias("inventory"), sql=_RESERVE_SQL, params={
            "skus": [line["sku"] for line in sorted_lines], "quantities": [line["quantity"] for line in sorted_lines],
            "order_id": order_id, "key": key, "status": Reservation.Status.HELD, "lines": json.dumps(sorted_lines),
        })
        if reservation_id is None:
            short = next(line["sku"] for line in sorted_lines if line["sku"] not in (moved or ()))
            raise OutOfStock(f"Not enough stock of {short}.", sku=short)
    reservation = Reservation(id=reservation_id, order_id=order_id, key=key, status=Reservation.Status.HELD,
                              lines=sorted_lines, created_at=created_at)
    reservation._state.adding = False
    return reservation


def stock_release(*, key: str) -> Reservation | None:
    """Give back what reservation `key` holds. Idempotent: releasing twice, or a reservation that was
    never made, changes nothing."""
    with transaction.atomic(using=service_alias("inventory"), savepoint=False):
        reservation = Reservation.objects.select_for_update().filter(key=key).first()
        if reservation is None or reservation.status == Reservation.Status.RELEASED:
            return reservation
        for line in reservation.lines:  # stored sorted by SKU
            Product.objects.filter(sku=line["sku"]).update(on_hand=F("on_hand") + line["quantity"])
        reservation.status = Reservation.Status.RELEASED
        reservation.released_at = timezone.now()
        reservation.save(update_fields=["status", "released_at"])
        return reservation


def product_upsert(*, sku: str, name: str, price_cents: int, stock: int) -> Product:
    """Create or reset a product to `stock` units on hand (used by the demo seed)."""
    product, _ = Product.objects.update_or_create(
        sku=sku, defaults={"name": name, "price_cents": price_cents, "on_hand": stock, "received": stock}
    )
    return product


def inventory_reset() -> None:
    Reservation.objects.all().delete()


def products_seed(*, catalogue: list[tuple[str, str, int]], stock: int) -> None:
    """Demo seed: the catalogue is exactly these products, (sku, name, price in cents), `stock` units each."""
    for sku, name, price_cents in catalogue:
        product_upsert(sku=sku, name=name, price_cents=price_cents, stock=stock)
    Product.objects.exclude(sku__in=[sku for sku, _, _ in catalogue]).delete()
