"""Typed failures shared by every service and every mode.

A BusinessError is an expected outcome (out of stock, declined, undeliverable): the flow stops and undoes
what it did. A TransientError is a fault that may go away (gateway timeout): the caller retries, and only
gives up after a bounded number of attempts. Each business error carries the stable code stored as an
order's failure reason and the HTTP status of its problem+json answer.
"""

from __future__ import annotations


class ShopError(Exception):
    code = "error"
    status = 500
    title = "Error"
    # Seconds after which the same request may succeed, sent as Retry-After; None when retrying as is would
    # be answered the same (a business outcome).
    retry_after: int | None = None

    def __init__(self, detail: str = "", **extra: object) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class BusinessError(ShopError):
    """An expected failure of the order flow: compensate, do not retry."""


class TransientError(ShopError):
    """A fault that may go away: retry with backoff, then give up."""

    retry_after = 1


class OutOfStock(BusinessError):
    code = "out_of_stock"
    status = 409
    title = "Out of stock"


class PaymentDeclined(BusinessError):
    code = "payment_declined"
    status = 402
    title = "Payment declined"


class InsufficientFunds(PaymentDeclined):
    code = "insufficient_funds"
    title = "Insufficient funds"


class Undeliverable(BusinessError):
    code = "undeliverable"
    status = 422
    title = "Address is undeliverable"


class PaymentUnavailable(BusinessError):
    """The gateway kept failing after every retry: the order fails, nothing is charged."""

    code = "payment_unavailable"
    status = 503
    title = "Payment gateway unavailable"


class GatewayTimeout(TransientError):
    code = "gateway_timeout"
    status = 503
    title = "Payment gateway timed out"


class ConcurrencyConflict(TransientError):
    """Deadlock or serialization failure that outlived its retries."""

    code = "concurrency_conflict"
    status = 503
    title = "Too much contention, try again"


BUSINESS_ERRORS: dict[str, type[BusinessError]] = {
    cls.code: cls for cls in (OutOfStock, PaymentDeclined, InsufficientFunds, Undeliverable, PaymentUnavailable)
}
