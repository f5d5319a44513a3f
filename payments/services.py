"""Writes of the payments service. Wallet balances move only by conditional UPDATEs."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from payments import gateway
from payments.models import Payment, Wallet
from shop.errors import InsufficientFunds
from shop.routers import service_alias


def payment_charge(*, order_id: int, customer_id: int, amount_cents: int, token: str, key: str) -> Payment:
    """Charge `amount_cents` to the customer's wallet through the gateway.

    Raises PaymentDeclined / InsufficientFunds (business) or GatewayTimeout (transient) and then changes
    nothing. Idempotent by `key`: a repeat returns the existing payment and charges nothing.
    """
    existing = Payment.objects.filter(key=key).first()
    if existing is not None:
        return existing
    reference = gateway.authorize(token=token, amount_cents=amount_cents, key=key)
    with transaction.atomic(using=service_alias("payments"), savepoint=False):
        debited = Wallet.objects.filter(customer_id=customer_id, balance_cents__gte=amount_cents).update(
            balance_cents=F("balance_cents") - amount_cents
        )
        if not debited:
            raise InsufficientFunds("The wallet does not hold enough money for this order.")
        return Payment.objects.create(
            order_id=order_id, key=key, customer_id=customer_id, amount_cents=amount_cents,
            gateway_reference=reference,
        )


def payment_refund(*, key: str) -> Payment | None:
    """Give back the money of payment `key`. Idempotent: refunding twice, or a charge that never happened,
    changes nothing."""
    with transaction.atomic(using=service_alias("payments"), savepoint=False):
        payment = Payment.objects.select_for_update().filter(key=key).first()
        if payment is None or payment.status == Payment.Status.REFUNDED:
            return payment
        Wallet.objects.filter(customer_id=payment.customer_id).update(
            balance_cents=F("balance_cents") + payment.amount_cents
        )
        payment.status = Payment.Status.REFUNDED
        payment.refunded_at = timezone.now()
        payment.save(update_fields=["status", "refunded_at"])
        return payment


def wallet_set(*, customer_id: int, balance_cents: int) -> Wallet:
    """Reset a customer's wallet to `balance_cents`, as if that were all the money ever put in (demo seed)."""
    wallet, _ = Wallet.objects.update_or_create(
        customer_id=customer_id, defaults={"balance_cents": balance_cents, "deposited_cents": balance_cents}
    )
    return wallet


def payments_reset() -> None:
    Payment.objects.all().delete()
