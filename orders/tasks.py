"""The orders service's saga commands."""

from orders.services import order_confirm, order_reject
from sagas.participants import participant_task


@participant_task(service="orders", name="orders.confirm_order")
def confirm_order(*, data: dict, key: str, failure: dict | None) -> None:
    order_confirm(order_id=data["order_id"])


@participant_task(service="orders", name="orders.reject_order")
def reject_order(*, data: dict, key: str, failure: dict | None) -> None:
    failure = failure or {}
    order_reject(order_id=data["order_id"], reason=failure.get("code", "failed"), detail=failure.get("detail", ""))
