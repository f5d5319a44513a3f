"""The order flow's steps, declared once: every ORDER_FLOW runs this tuple (ORDER_STEPS, at the end).

Each step names its service and that service's action and compensation. The functions below are the thin
adapters between the flow's data and each service's own functions (services.py): they all have the one
signature of shop.steps, so a coordinator runs any step the same way:

- atomic (orders/flows/atomic.py) calls the actions in order inside one transaction, the payment's hold
  around it;
- saga (orders/sagas.py) derives its SagaDefinition from the tuple: each function becomes the Celery task
  `<service>.<function name>` (inventory.reserve_stock, payments.charge, ...).

Adding a step (say, e-mail the customer) is one line in ORDER_STEPS plus its function here and in the
service; every mode picks it up.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from inventory.services import stock_release, stock_reserve
from orders.services import PlaceOrder, order_confirm, order_reject
from payments.gateway import Authorization
from payments.services import (
    payment_authorize,
    payment_capture,
    payment_charge,
    payment_record,
    payment_refund,
    payment_void,
)
from shipping.services import shipment_cancel, shipment_schedule
from shop.errors import GatewayTimeout, PaymentUnavailable
from shop.steps import Hold, Retry, Step

Data = dict[str, Any]


def order_data(*, command: PlaceOrder, amount_cents: int) -> Data:
    """What the steps read of the order as asked for; a coordinator adds `order_id` once the order exists."""
    return {
        "customer_id": command.customer_id,
        "lines": [[sku, quantity] for sku, quantity in sorted(command.lines)],
        "amount_cents": amount_cents,
        "payment_token": command.payment_token,
        "address": dict(command.shipping_address),
    }


# --- orders ----------------------------------------------------------------------------------------------

def reject_order(*, data: Data, key: str, failure: dict | None, fresh: bool) -> None:
    failure = failure or {}
    order_reject(order_id=data["order_id"], reason=failure.get("code", "failed"), detail=failure.get("detail", ""))


def confirm_order(*, data: Data, key: str, failure: dict | None, fresh: bool) -> Data:
    confirmed_at = order_confirm(order_id=data["order_id"])
    # The time the order became final, for a coordinator that answers with the order (None: it already was).
    return {"confirmed_at": confirmed_at.isoformat() if confirmed_at else None}


# --- inventory -------------------------------------------------------------------------------------------

def reserve_stock(*, data: Data, key: str, failure: dict | None, fresh: bool) -> None:
    stock_reserve(order_id=data["order_id"], key=key, lines=[(sku, qty) for sku, qty in data["lines"]],
                  key_is_new=fresh)


def release_stock(*, data: Data, key: str, failure: dict | None, fresh: bool) -> None:
    stock_release(key=key)


# --- payments --------------------------------------------------------------------------------------------

def charge(*, data: Data, key: str, failure: dict | None, fresh: bool) -> Data:
    """Authorize, debit and record in the step's own transaction; capture once it commits."""
    payment = payment_charge(order_id=data["order_id"], customer_id=data["customer_id"],
                             amount_cents=data["amount_cents"], token=data["payment_token"], key=key,
                             key_is_new=fresh)
    return {"payment_reference": payment.gateway_reference}


def refund(*, data: Data, key: str, failure: dict | None, fresh: bool) -> None:
    payment_refund(key=key)


def authorization_key(*, request_key: str, amount_cents: int) -> str:
    """The same request at the same amount finds the authorization of its first try; at another price
    (the catalogue changed between tries) it is another authorization."""
    return f"{request_key}:{amount_cents}"


def authorize(*, data: Data, key: str) -> Data:
    """The hold, before the coordinator's transaction (`key` names the request); transient gateway faults are
    retried PAYMENT_ATTEMPTS times."""
    amount_cents = data["amount_cents"]
    for attempt in range(1, settings.PAYMENT_ATTEMPTS + 1):
        try:
            held = payment_authorize(token=data["payment_token"], amount_cents=amount_cents,
                                     key=authorization_key(request_key=key, amount_cents=amount_cents))
            return {"authorization": {"reference": held.reference, "amount_cents": held.amount_cents}}
        except GatewayTimeout as exc:
            if attempt == settings.PAYMENT_ATTEMPTS:
                raise PaymentUnavailable(f"The gateway failed {attempt} times: {exc.detail}") from exc
            time.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


def record(*, data: Data, key: str, failure: dict | None, fresh: bool) -> Data:
    """The held amount debited and recorded, in the coordinator's transaction."""
    payment = payment_record(authorization=Authorization(**data["authorization"]), order_id=data["order_id"],
                             customer_id=data["customer_id"], key=key)
    return {"payment_reference": payment.gateway_reference}


def capture(*, data: Data) -> None:
    payment_capture(authorization=Authorization(**data["authorization"]))


def void(*, data: Data) -> None:
    payment_void(authorization=Authorization(**data["authorization"]))


# --- shipping --------------------------------------------------------------------------------------------

def schedule(*, data: Data, key: str, failure: dict | None, fresh: bool) -> Data:
    shipment = shipment_schedule(order_id=data["order_id"], key=key, address=data["address"], key_is_new=fresh)
    return {"tracking_number": shipment.tracking_number}


def cancel(*, data: Data, key: str, failure: dict | None, fresh: bool) -> None:
    shipment_cancel(key=key)


ORDER_STEPS: tuple[Step, ...] = (
    # Done by the coordinator as it accepts the order, in the same transaction (orders.services.order_create).
    Step("create_order", "orders", action=None, compensation=reject_order),
    Step("reserve_stock", "inventory", action=reserve_stock, compensation=release_stock),
    Step("charge_payment", "payments", action=charge, compensation=refund,
         retry=Retry(attempts=4, backoff_seconds=0.05, on=(GatewayTimeout,), exhausted=PaymentUnavailable.code),
         hold=Hold(take=authorize, action=record, settle=capture, release=void)),
    Step("schedule_shipment", "shipping", action=schedule, compensation=cancel),
    # The point of no return: nothing after it can fail.
    Step("confirm_order", "orders", action=confirm_order),
)
