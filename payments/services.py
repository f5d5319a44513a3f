"""Writes of the payments service. Wallet balances move only by conditional UPDATEs."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from payments import gateway
from payments.models import Payment, Wallet
from shop.db import fetch
from shop.errors import InsufficientFunds
from shop.routers import service_alias

logger = logging.getLogger(__name__)


def payment_authorize(*, token: str, amount_cents: int, key: str) -> gateway.Authorization:
    """Hold `amount_cents` on the card, before any database work. Idempotent by `key` at the gateway: the
    same key returns the same authorization, so a retried request never holds (or charges) twice.

    Raises PaymentDeclined (business) or GatewayTimeout (transient, retry with the same key)."""
    return gateway.authorize(token=token, amount_cents=amount_cents, key=key)


# The wallet debited (never below zero) and the payment recorded in one round trip; no row comes back when the
# wallet is short, and then nothing changed.
_RECORD_SQL = f"""
WITH debited AS (
    UPDATE {Wallet._meta.db_table} SET balance_cents = balance_cents - %(amount_cents)s
    WHERE customer_id = %(customer_id)s AND balance_cents >= %(amount_cents)s
    RETURNING customer_id
)
INSERT INTO {Payment._meta.db_table} (order_id, key, customer_id, amount_cents, status, gateway_reference, created_at)
SELECT %(order_id)s, %(key)s, customer_id, %(amount_cents)s, %(status)s, %(reference)s, statement_timestamp()
FROM debited
RETURNING id, created_at
"""


def payment_record(*, authorization: gateway.Authorization, order_id: int, customer_id: int, key: str
                   ) -> Payment:
    """Debit the customer's wallet by the authorized amount and record the payment, in the caller's
    transaction. Raises InsufficientFunds and changes nothing if the wallet is short. Not idempotent: callers
    whose key may repeat use `payment_charge`."""
    amount_cents = authorization.amount_cents
    recorded = fetch(using=service_alias("payments"), sql=_RECORD_SQL, params={
        "amount_cents": amount_cents, "customer_id": customer_id, "order_id": order_id, "key": key,
        "status": Payment.Status.CHARGED, "reference": authorization.reference,
    })
    if not recorded:
        raise InsufficientFunds("The wallet does not hold enough money for this order.")
    [(payment_id, created_at)] = recorded
    payment = Payment(id=payment_id, order_id=order_id, key=key, customer_id=customer_id, amount_cents=amount_cents,
                      status=Payment.Status.CHARGED, gateway_reference=authorization.reference, created_at=created_at)
    payment._state.adding = False
    return payment


def payment_capture(*, authorization: gateway.Authorization) -> None:
    """Collect an authorization whose payment is committed. Idempotent. A failure here leaves the hold to
    expire at the gateway; the wallet debit, which is what the books count, is already committed."""
    try:
        gateway.capture(authorization.reference)
    except Exception:
        logger.exception("Capture of %s failed; the order stands, the hold will expire", authorization.reference)


def payment_void(*, authorization: gateway.Authorization) -> None:
    """Release an authorization whose payment was not recorded (the order failed). Idempotent. Never raises
    over the failure being handled: a hold that could not be voided charges nothing and expires."""
    try:
        gateway.void(authorization.reference)
    except Exception:
        logger.exception("Void of %s failed; the hold will expire uncaptured", authorization.reference)


def payment_charge(*, order_id: int, customer_id: int, amount_cents: int, token: str, key: str,
                   key_is_new: bool = False) -> Payment:
    """Authorize, debit the wallet and record the payment, capturing once the caller's transaction commits.

    Raises PaymentDeclined / InsufficientFunds (business) or GatewayTimeout (transient) and then changes
    nothing (an authorization the wallet cannot cover is voided). Idempotent by `key`: a repeat returns the
    existing payment and charges nothing; the gateway authorization is keyed by it too. A caller that knows no
    payment under `key` can exist yet passes `key_is_new` and saves the lookup.
    """
    if not key_is_new:
        existing = Payment.objects.filter(key=key).first()
        if existing is not None:
            return existing
    authorization = payment_authorize(token=token, amount_cents=amount_cents, key=key)
    alias = service_alias("payments")
    try:
        payment = payment_record(authorization=authorization, order_id=order_id, customer_id=customer_id,
                                 key=key)
    except InsufficientFunds:
        payment_void(authorization=authorization)
        raise
    # Dropped with the transaction if it rolls back: the authorization then stays held, and the redelivered
    # command finds it again under the same key.
    transaction.on_commit(lambda: payment_capture(authorization=authorization), using=alias)
    return payment


def payment_refund(*, key: str) -> Payment | None:
    """Give back the money of payment `key`, at the gateway and in the wallet. Idempotent: refunding twice,
    or a charge that never happened, changes nothing."""
    with transaction.atomic(using=service_alias("payments"), savepoint=False):
        payment = Payment.objects.select_for_update().filter(key=key).first()
        if payment is None or payment.status == Payment.Status.REFUNDED:
            return payment
        # Before the wallet: if this transaction then rolls back, the repeat finds the gateway refund done
        # (refunds are idempotent by reference) and completes the wallet side.
        gateway.refund(payment.gateway_reference)
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


def wallets_seed(*, customer_ids: list[int], balance_cents: int) -> None:
    """Demo seed: exactly these customers have a wallet, each holding `balance_cents` as all the money put in."""
    for customer_id in customer_ids:
        wallet_set(customer_id=customer_id, balance_cents=balance_cents)
    Wallet.objects.exclude(customer_id__in=customer_ids).delete()
