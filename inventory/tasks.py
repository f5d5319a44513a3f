"""The inventory service's saga commands."""

from inventory.services import stock_release, stock_reserve
from sagas.participants import participant_task


@participant_task(service="inventory", name="inventory.reserve_stock")
def reserve_stock(*, data: dict, key: str, failure: dict | None, fresh: bool = False) -> None:
    stock_reserve(order_id=data["order_id"], key=key, lines=[(sku, qty) for sku, qty in data["lines"]],
                  key_is_new=fresh)


@participant_task(service="inventory", name="inventory.release_stock")
def release_stock(*, data: dict, key: str, failure: dict | None) -> None:
    stock_release(key=key)
