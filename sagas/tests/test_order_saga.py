"""The order flow as an orchestrated saga, end to end through real Celery workers, relay and sweeper."""

from __future__ import annotations

import functools
import time
import uuid
from collections import Counter

import pytest

from inventory.models import Product, Reservation
from operations.audit import run_audit
from orders.models import Order
from payments.models import Payment, Wallet
from sagas.models import SagaInstance, SagaStepLog
from sagas.testing import inbox_count, outbox
from shipping.models import Shipment
from shop.testing import all_at_once, order_body, wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]

# Generous: on a loaded 2-core machine a saga of four messages can take many times its usual second.
FINAL_TIMEOUT = 90


def place(client, lines, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/orders", order_body(lines, **kwargs), format="json")
    assert response.status_code == 202, (response.status_code, response.content)
    body = response.json()
    assert body["status"] == "PENDING", body
    assert response["Location"] == body["url"] == f"/api/v1/orders/{body['id']}", (response["Location"], body)
    return body


def wait_final(client, order_id: int, stack) -> dict:  # type: ignore[no-untyped-def]
    def final() -> bool:
        # The saga finishes just after its last step made the order final.
        return Order.objects.filter(pk=order_id).exclude(status=Order.Status.PENDING).exists() and \
            saga_of(order_id).state not in SagaInstance.ACTIVE

    if not wait_until(final, timeout=FINAL_TIMEOUT):
        saga = saga_of(order_id)
        raise AssertionError(f"order {order_id} not final after {FINAL_TIMEOUT} s: order "
                             f"{Order.objects.get(pk=order_id).status}, saga {saga.state} at step "
                             f"{saga.current_step}, log {timeline(order_id)}\n{stack.logs()}")
    return client.get(f"/api/v1/orders/{order_id}").json()


def saga_of(order_id: int) -> SagaInstance:
    return next(s for s in SagaInstance.objects.all() if s.data["order_id"] == order_id)


def timeline(order_id: int) -> list[tuple[str, str, str]]:
    """(step, direction, outcome) of every reply, in the order the orchestrator handled them."""
    saga = saga_of(order_id)
    return [(log.step_name, log.direction, log.outcome)
            for log in SagaStepLog.objects.filter(saga=saga).order_by("id") if log.outcome not in ("resent", "stale")]


def assert_audit_clean(stack) -> None:  # type: ignore[no-untyped-def]
    # The audit reads a quiet system: every message delivered and handled (late duplicates included).
    left = stack.wait_idle()
    assert not left, f"still in flight: {left}\n{stack.logs()}"
    failed = [check.line() for check in run_audit() if not check.ok]
    assert failed == [], f"{failed}\n{stack.logs()}"


def post_until_answered(client, body: dict, *, attempts: int = 10):  # type: ignore[no-untyped-def]
    """POST an order as a careful client does: a 503 with Retry-After (overloaded, a conflict, a dependency away
    for a moment) is sent again with the same Idempotency-Key after the delay; any other answer is returned."""
    key = uuid.uuid4().hex
    for _ in range(attempts):
        response = client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
        if response.status_code != 503 or not response.has_header("Retry-After"):
            return response
        time.sleep(min(float(response["Retry-After"]), 2.0))
    return response


@pytest.fixture
def shop_world(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    make_product(sku="SKU-B", stock=5, price_cents=250)
    customer = make_customer(balance_cents=100_000)
    return {"customer": customer, "client": client_for(customer)}


ACTIONS_OK = [
    ("create_order", "action", "ok"),
    ("reserve_stock", "action", "ok"),
    ("charge_payment", "action", "ok"),
    ("schedule_shipment", "action", "ok"),
    ("confirm_order", "action", "ok"),
]


def test_happy_path_confirms(saga, shop_world):
    client = shop_world["client"]
    order = place(client, [("SKU-A", 2), ("SKU-B", 1)])

    final = wait_final(client, order["id"], saga)

    assert final["status"] == "CONFIRMED", final
    assert timeline(order["id"]) == ACTIONS_OK
    assert saga_of(order["id"]).state == SagaInstance.State.COMPLETED
    assert Product.objects.get(sku="SKU-A").on_hand == 3
    assert Wallet.objects.get(customer_id=shop_world["customer"].pk).balance_cents == 100_000 - 2250
    assert Shipment.objects.get(order_id=order["id"]).status == Shipment.Status.SCHEDULED
    assert_audit_clean(saga)


@pytest.mark.parametrize(
    ("kwargs", "quantity", "balance", "reason", "expected"),
    [
        ({}, 6, 100_000, "out_of_stock", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "business"),
            ("create_order", "compensation", "ok"),
        ]),
        ({"token": "tok_decline"}, 1, 100_000, "payment_declined", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "ok"),
            ("charge_payment", "action", "business"),
            ("reserve_stock", "compensation", "ok"),
            ("create_order", "compensation", "ok"),
        ]),
        ({}, 1, 500, "insufficient_funds", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "ok"),
            ("charge_payment", "action", "business"),
            ("reserve_stock", "compensation", "ok"),
            ("create_order", "compensation", "ok"),
        ]),
        ({"country": "XX"}, 1, 100_000, "undeliverable", [
            ("create_order", "action", "ok"),
            ("reserve_stock", "action", "ok"),
            ("charge_payment", "action", "ok"),
            ("schedule_shipment", "action", "business"),
            ("charge_payment", "compensation", "ok"),
            ("reserve_stock", "compensation", "ok"),
            ("create_order", "compensation", "ok"),
        ]),
    ],
    ids=["out-of-stock", "declined", "insufficient-funds", "undeliverable"],
)
def test_a_failure_at_each_step_compensates_in_reverse(saga, make_product, make_customer, client_for, kwargs,
                                                        quantity, balance, reason, expected):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=balance)
    client = client_for(customer)

    order = place(client, [("SKU-A", quantity)], **kwargs)
    final = wait_final(client, order["id"], saga)

    assert (final["status"], final["failure_reason"]) == ("FAILED", reason), final
    assert timeline(order["id"]) == expected
    assert saga_of(order["id"]).state == SagaInstance.State.COMPENSATED
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == balance
    mine = {"order_id": order["id"]}
    assert list(Reservation.objects.filter(**mine, status=Reservation.Status.HELD).values()) == []
    assert list(Payment.objects.filter(**mine, status=Payment.Status.CHARGED).values()) == []
    assert list(Shipment.objects.filter(**mine, status=Shipment.Status.SCHEDULED).values()) == []
    assert_audit_clean(saga)


def test_flaky_gateway_is_retried_then_pays(saga, shop_world):
    client = shop_world["client"]
    order = place(client, [("SKU-A", 1)], token="tok_flaky")

    final = wait_final(client, order["id"], saga)
    assert final["status"] == "CONFIRMED", final
    charges = [entry for entry in timeline(order["id"]) if entry[0] == "charge_payment"]
    assert charges == [("charge_payment", "action", "transient")] * 2 + [("charge_payment", "action", "ok")]
    attempts = list(SagaStepLog.objects.filter(saga=saga_of(order["id"]), step_name="charge_payment")
                    .exclude(outcome__in=["resent", "stale"]).order_by("id").values_list("attempt", flat=True))
    assert attempts == [1, 2, 3]
    payments = list(Payment.objects.filter(order_id=order["id"]).values("status", "amount_cents"))
    assert len(payments) == 1, payments
    assert_audit_clean(saga)


def test_gateway_timeouts_exhaust_retries_then_compensate(saga, shop_world):
    client = shop_world["client"]
    order = place(client, [("SKU-A", 1)], token="tok_timeout")

    final = wait_final(client, order["id"], saga)

    assert (final["status"], final["failure_reason"]) == ("FAILED", "payment_unavailable"), final
    assert timeline(order["id"]) == [
        ("create_order", "action", "ok"),
        ("reserve_stock", "action", "ok"),
        *[("charge_payment", "action", "transient")] * 4,
        # The last attempt's outcome is unknown to the orchestrator, so its compensation runs too.
        ("charge_payment", "compensation", "ok"),
        ("reserve_stock", "compensation", "ok"),
        ("create_order", "compensation", "ok"),
    ]
    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert_audit_clean(saga)


def test_every_message_delivered_twice_changes_nothing_twice(saga, shop_world, make_customer, client_for):
    for relay in [name for name in list(saga.procs) if name.startswith("relay-")]:
        saga.stop(relay)
    saga.relays(OUTBOX_RELAY_FAULT="publish-twice")
    client = shop_world["client"]
    ok = place(client, [("SKU-A", 1)])
    undeliverable = place(client, [("SKU-B", 1)], country="XX")

    final = [wait_final(client, order["id"], saga) for order in (ok, undeliverable)]
    assert [order["status"] for order in final] == ["CONFIRMED", "FAILED"], final

    mine = {"order_id__in": [ok["id"], undeliverable["id"]]}
    assert Reservation.objects.filter(**mine).count() == 2, list(Reservation.objects.filter(**mine).values())
    assert Payment.objects.filter(**mine).count() == 2, list(Payment.objects.filter(**mine).values())
    assert Shipment.objects.filter(**mine).count() == 1, list(Shipment.objects.filter(**mine).values())
    assert Payment.objects.get(order_id=undeliverable["id"]).status == Payment.Status.REFUNDED
    assert Product.objects.get(sku="SKU-A").on_hand == 4
    assert Product.objects.get(sku="SKU-B").on_hand == 5
    # Every command arrived twice: the second copy found the inbox row and only re-sent the stored reply.
    # (The sweeper may re-send a slow step too: more copies, never fewer.)
    # Steps of the orders service run inside the orchestrator's transaction: no message, nothing to deliver.
    local = {"create_order", "confirm_order"}
    replies = sum(1 for order in (ok, undeliverable) for step, _, _ in timeline(order["id"]) if step not in local)

    def copies() -> Counter:
        return Counter(message.message_id for message in outbox(task="sagas.reply"))

    assert wait_until(lambda: len(copies()) == replies and min(copies().values()) >= 2, timeout=60), \
        (replies, copies())
    assert inbox_count() == 2 * replies, (inbox_count(), replies)  # one row per command and per reply, never two
    assert_audit_clean(saga)


def test_hot_sku_sells_exactly_the_stock(saga, make_product, make_customer, client_for):
    make_product(sku="SKU-HOT", stock=10, price_cents=500)
    customers = [make_customer(balance_cents=100_000) for _ in range(8)]
    # Three times the stock, all at once: enough to oversell if anything could, and few enough connections
    # for a PostgreSQL that other test runs share.
    clients = [client_for(customers[i % len(customers)]) for i in range(30)]
    responses = all_at_once([
        functools.partial(post_until_answered, client, order_body([("SKU-HOT", 1)])) for client in clients
    ])
    # A response, or the exception of a request that raised.
    not_accepted = [(r.status_code, r.content) if hasattr(r, "status_code") else repr(r)
                    for r in responses if getattr(r, "status_code", None) != 202]

    assert not_accepted == [], not_accepted
    ids = [response.json()["id"] for response in responses]
    assert wait_until(lambda: not Order.objects.filter(pk__in=ids, status=Order.Status.PENDING).exists(),
                      timeout=FINAL_TIMEOUT), saga.logs()
    outcomes = Counter(Order.objects.filter(pk__in=ids).values_list("status", "failure_reason"))
    assert outcomes == {("CONFIRMED", ""): 10, ("FAILED", "out_of_stock"): 20}, outcomes
    assert Product.objects.get(sku="SKU-HOT").on_hand == 0
    assert_audit_clean(saga)


def test_nothing_is_published_for_a_rejected_request(saga, shop_world):
    before = {m.pk for m in outbox()}
    response = shop_world["client"].post("/api/v1/orders", order_body([("SKU-NOPE", 1)]), format="json")
    assert response.status_code == 400, (response.status_code, response.content)
    assert list(Order.objects.filter(customer_id=shop_world["customer"].pk).values()) == []
    assert [vars(m) for m in outbox() if m.pk not in before] == []
