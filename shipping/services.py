"""Writes of the shipping service."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from django.utils import timezone

from shipping.models import Shipment
from shop.db import fetch
from shop.errors import Undeliverable
from shop.routers import service_alias

UNDELIVERABLE_COUNTRIES = frozenset({"XX"})

_SCHEDULE_SQL = f"""
INSERT INTO {Shipment._meta.db_table} (order_id, key, status, name, line1, city, postal_code, country,
                                       tracking_number, created_at)
VALUES (%(order_id)s, %(key)s, %(status)s, %(name)s, %(line1)s, %(city)s, %(postal_code)s, %(country)s,
        %(tracking_number)s, statement_timestamp())
RETURNING id, created_at
"""


def shipment_schedule(*, order_id: int, key: str, address: Mapping[str, str], key_is_new: bool = False
                      ) -> Shipment:
    """Schedule delivery of order `order_id` to `address`. Raises Undeliverable for a country no carrier
    serves. Idempotent by `key` (`key_is_new`: the caller knows it cannot exist yet, skip the lookup)."""
    if not key_is_new:
        existing = Shipment.objects.filter(key=key).first()
        if existing is not None:
            return existing
    if address["country"] in UNDELIVERABLE_COUNTRIES:
        raise Undeliverable(f"No carrier delivers to country {address['country']}.")
    shipment = Shipment(order_id=order_id, key=key, status=Shipment.Status.SCHEDULED, name=address["name"],
                        line1=address["line1"], city=address["city"], postal_code=address["postal_code"],
                        country=address["country"], tracking_number=f"TRK{uuid.uuid4().hex[:12].upper()}")
    [(shipment.id, shipment.created_at)] = fetch(using=service_alias("shipping"), sql=_SCHEDULE_SQL, params={
        "order_id": order_id, "key": key, "status": shipment.status, "name": shipment.name, "line1": shipment.line1,
        "city": shipment.city, "postal_code": shipment.postal_code, "country": shipment.country,
        "tracking_number": shipment.tracking_number,
    })
    shipment._state.adding = False
    return shipment


def shipment_cancel(*, key: str) -> Shipment | None:
    """Cancel shipment `key`. Idempotent: cancelling twice, or a shipment never scheduled, changes nothing."""
    Shipment.objects.filter(key=key, status=Shipment.Status.SCHEDULED).update(
        status=Shipment.Status.CANCELLED, cancelled_at=timezone.now()
    )
    return Shipment.objects.filter(key=key).first()


def shipping_reset() -> None:
    Shipment.objects.all().delete()
