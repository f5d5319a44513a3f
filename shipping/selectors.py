"""Reads of the shipping service."""

from __future__ import annotations

from shipping.models import Shipment

# The states a reader outside shipping compares with (the audit), without the model.
ShipmentStatus = Shipment.Status


def shipment_for_order(*, order_id: int) -> Shipment | None:
    return Shipment.objects.filter(order_id=order_id).first()


def shipments_by_order() -> dict[int, str]:
    """For the audit: status of every shipment, by order id."""
    return dict(Shipment.objects.values_list("order_id", "status"))
