"""The payments service's saga commands."""

from payments.services import payment_charge, payment_refund
from sagas.participants import participant_task


@participant_task(service="payments", name="payments.charge")
def charge(*, data: dict, key: str, failure: dict | None, fresh: bool = False) -> dict:
    payment = payment_charge(order_id=data["order_id"], customer_id=data["customer_id"],
                             amount_cents=data["amount_cents"], token=data["payment_token"], key=key,
                             key_is_new=fresh)
    return {"payment_reference": payment.gateway_reference}


@participant_task(service="payments", name="payments.refund")
def refund(*, data: dict, key: str, failure: dict | None) -> None:
    payment_refund(key=key)
