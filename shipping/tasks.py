"""The shipping service's saga commands."""

from sagas.participants import participant_task
from shipping.services import shipment_cancel, shipment_schedule


@participant_task(service="shipping", name="shipping.schedule")
def schedule(*, data: dict, key: str, failure: dict | None, fresh: bool = False) -> dict:
    shipment = shipment_schedule(order_id=data["order_id"], key=key, address=data["address"], key_is_new=fresh)
    return {"tracking_number": shipment.tracking_number}


@participant_task(service="shipping", name="shipping.cancel")
def cancel(*, data: dict, key: str, failure: dict | None) -> None:
    shipment_cancel(key=key)
