"""Typed failures shared by every service and every mode.

A BusinessError is an expected outcome (out of stock, declined, undeliverable): the flow stops and undoes
what it did. A TransientError is a fault that may go away (gateway timeout): the caller retries, and only
gives up after a bounded number of attempts. Each business error carries the stable code stored as an
order's failure reason and the HTTP status of its problem+json answer.
"""

from __future__ import annotations

import functools


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


class DependencyUnavailable(TransientError):
    """PostgreSQL, Redis or the broker cannot be reached (restarting, down, out of connections)."""

    code = "dependency_unavailable"
    status = 503
    title = "A service the shop depends on is unavailable"
    # A restart of PostgreSQL or Redis takes seconds; asking again sooner only adds load.
    retry_after = 5


@functools.cache
def database_unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the database cannot be reached, not that a query or its data was wrong.

    OperationalError covers a refused or dropped connection, a server shutting down and too many clients;
    InterfaceError a connection already closed. IntegrityError, DataError and ProgrammingError are bugs or
    bad input and stay what they are. (Deadlocks are OperationalErrors too: shop.db tells them apart.)
    """
    import django.db
    import psycopg

    return (django.db.OperationalError, django.db.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


@functools.cache
def broker_unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean Redis (cache, gateway memory, broker) or another broker cannot be reached.

    A Redis publish pipeline that failed (BatchPublishError: which of its messages arrived is unknown) and
    RabbitMQ's connection errors and refused confirms (py-amqp raises its own) are the broker away too.
    """
    import amqp.exceptions
    import kombu.exceptions
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            kombu.exceptions.ConnectionError, kombu.exceptions.BatchPublishError, amqp.exceptions.ConnectionError,
            amqp.exceptions.MessageNacked, ConnectionError, TimeoutError)


def dependency_unavailable(exc: BaseException) -> DependencyUnavailable | None:
    """The 503 to answer for `exc` when it means a dependency is away; None for any other error."""
    if isinstance(exc, database_unavailable_errors()):
        return DependencyUnavailable("The database is unavailable; try again shortly.")
    if isinstance(exc, broker_unavailable_errors()):
        return DependencyUnavailable("Redis or the message broker is unavailable; try again shortly.")
    return None
