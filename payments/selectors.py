"""Reads of the payments service."""

from __future__ import annotations

from django.db.models import Sum

from payments.models import Payment, Wallet

# The states a reader outside payments compares with (the audit), without the model.
PaymentStatus = Payment.Status


def wallet_for_customer(*, customer_id: int) -> Wallet | None:
    return Wallet.objects.filter(customer_id=customer_id).first()


def payment_for_order(*, order_id: int) -> Payment | None:
    return Payment.objects.filter(order_id=order_id).first()


def payments_by_order() -> dict[int, tuple[str, int, int]]:
    """For the audit: (status, amount, customer id) of every payment, by order id."""
    return {
        order_id: (status, amount, customer_id)
        for order_id, status, amount, customer_id in Payment.objects.values_list(
            "order_id", "status", "amount_cents", "customer_id"
        )
    }


def money_totals() -> dict[str, int]:
    """For the audit: money in wallets, net charges, and money ever put in."""
    wallets = Wallet.objects.aggregate(balance=Sum("balance_cents"), deposited=Sum("deposited_cents"))
    charged = Payment.objects.filter(status=Payment.Status.CHARGED).aggregate(total=Sum("amount_cents"))
    return {
        "balance": wallets["balance"] or 0,
        "deposited": wallets["deposited"] or 0,
        "charged": charged["total"] or 0,
    }
