"""The order flow with one step more: the payments service e-mails the customer a receipt.

This is all it takes to add a step: the service's function (here, with its compensation) and one line in
the step list. Every mode picks it up: the atomic flow runs the tuple it is given, and the saga definition
is derived from the same tuple (its tasks payments.email_receipt / payments.retract_receipt are generated).

Imported by the tests, and by the Celery worker and the sweeper they start (`--include`), so that every
process knows the definition. The "e-mail" is a row in a table the tests create: written in the step's
transaction, so a duplicate delivery that ran the function twice would show as two rows.
"""

from __future__ import annotations

from django.db import connections

from orders.choreography import order_choreography
from orders.sagas import ORDER_SAGA
from orders.steps import ORDER_STEPS
from sagas.definitions import SagaDefinition, register
from shop.routers import service_alias
from shop.steps import Step

MODULE = __name__
TABLE = "test_receipt"


# --- the service's function and its compensation ------------------------------------------------------------

def email_receipt(*, data: dict, key: str, failure: dict | None, fresh: bool) -> None:
    with connections[service_alias("payments")].cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (order_id, key, payment_reference, status) VALUES (%s, %s, %s, 'sent')",
                       [data["order_id"], key, data["payment_reference"]])


def retract_receipt(*, data: dict, key: str, failure: dict | None, fresh: bool) -> None:
    with connections[service_alias("payments")].cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET status = 'retracted' WHERE key = %s", [key])


# --- the one edit: a line in the step list ---------------------------------------------------------------

STEPS = (
    *ORDER_STEPS[:3],  # create_order, reserve_stock, charge_payment
    Step("email_receipt", "payments", action=email_receipt, compensation=retract_receipt),
    *ORDER_STEPS[3:],  # schedule_shipment, confirm_order
)
SAGA = register(SagaDefinition(name="order_receipt", service=ORDER_SAGA.service, steps=STEPS))
# ... and the same steps as a choreography (ORDER_FLOW=choreography).
CHOREOGRAPHY = order_choreography(name="order_receipt", steps=STEPS)


# --- for the tests -----------------------------------------------------------------------------------------

def table_create(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id serial PRIMARY KEY, order_id integer NOT NULL, "
                       "key text NOT NULL, payment_reference text NOT NULL, status text NOT NULL)")
        cursor.execute(f"TRUNCATE {TABLE}")


def table_drop(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


def receipts(order_id: int) -> list[tuple[str, str]]:
    """(payment reference, status) of every receipt of the order, oldest first."""
    with connections[service_alias("payments")].cursor() as cursor:
        cursor.execute(f"SELECT payment_reference, status FROM {TABLE} WHERE order_id = %s ORDER BY id", [order_id])
        return [tuple(row) for row in cursor.fetchall()]
