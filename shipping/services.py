"""Writes of the shipping service."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from django.utils import timezone

from shipping.models import Shipment
from shop.errors import Undeliverable

UNDELIVERABLE_COUNTRIES = frozenset({"XX"})


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
    return Shipment.objects.create(
        order_id=order_id, key=key, name=address["name"], line1=address["line1"], city=address["city"],
        postal_code=address["postal_code"], country=address["country"],
        tracking_number=f"TRK{uuid.uuid4().hex[:12].upper()}",
    )


def shipment_cancel(*, key: str) -> Shipment | None:
    """Cancel shipment `key`. Idempotent: cancelling twice, or a shipment never scheduled, changes nothing."""
    Shipment.objects.filter(key=key, status=Shipment.Status.SCHEDULED).update(
        status=Shipment.Status.CANCELLED, cancelled_at=timezone.now()
    )
    return Shipment.objects.filter(key=key).first()


def shipping_reset() -> None:
    Shipment.objects.all().delete()
