"""Processes die at the worst moments; every saga still ends CONFIRMED or FAILED and the audit is clean."""

from __future__ import annotations

import pytest

from inventory.models import Reservation
from orders.models import Order
from payments.models import Payment
from sagas.models import SagaInstance, SagaStepLog
from sagas.processes import QUEUES, relay_aliases
from sagas.testing import outbox
from sagas.tests.test_order_saga import assert_audit_clean, place, timeline, wait_final
from shop.routers import service_alias
from shop.testing import wait_until

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__")]


@pytest.fixture
def buyer(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=50, price_cents=1000)
    return client_for(make_customer(balance_cents=1_000_000))


def _stop_relays(stack) -> None:  # type: ignore[no-untyped-def]
    for name in [name for name in list(stack.procs) if name.startswith("relay-")]:
        stack.stop(name)


def test_worker_killed_in_the_middle_of_a_charge(saga, buyer):
    saga.stop("worker")
    saga.worker("worker-rest", tuple(q for q in QUEUES if q != "payments"))
    # A slow gateway keeps the charge in progress long enough to kill the worker inside it.
    saga.worker("worker-payments", ("payments",), PAYMENT_LATENCY_MS="4000")
    order = place(buyer, [("SKU-A", 1)])
    assert wait_until(lambda: SagaStepLog.objects.filter(step_name="reserve_stock", outcome="ok").exists(),
                      timeout=30), saga.logs()
    assert wait_until(lambda: outbox(task="payments.charge", published_at__isnull=False), timeout=10)
    import time

    time.sleep(1.5)  # the worker has taken the message and is waiting on the gateway
    saga.kill("worker-payments")
    saga.worker("worker-payments", ("payments",))

    final = wait_final(buyer, order["id"], saga)

    assert final["status"] == "CONFIRMED"
    assert Payment.objects.filter(order_id=order["id"]).count() == 1
    # The unacknowledged command was re-sent by the sweeper once the step deadline passed.
    assert SagaStepLog.objects.filter(step_name="charge_payment", outcome="resent").exists()
    assert_audit_clean(saga)


@pytest.mark.parametrize("fault", ["crash-after-claim", "crash-after-publish"])
def test_relay_dies_between_claim_publish_and_commit(saga, buyer, fault):
    _stop_relays(saga)
    # The orchestrator's outbox (orders' database) carries the first command.
    saga.relay("relay-faulty", service_alias("orders"), OUTBOX_RELAY_FAULT=fault)
    order = place(buyer, [("SKU-A", 1)])
    proc = saga.procs["relay-faulty"]
    assert wait_until(lambda: proc.poll() is not None, timeout=20), saga.logs()
    assert proc.returncode == 17
    # The claim was never committed: the command is still waiting to be published.
    # (The sweeper may have re-sent it meanwhile: the same message again, never another command.)
    pending = outbox(task="inventory.reserve_stock", published_at__isnull=True)
    assert pending and {m.message_id for m in pending} == {m.message_id for m in outbox(task="inventory.reserve_stock")}
    saga.stop("relay-faulty")
    saga.standard()

    final = wait_final(buyer, order["id"], saga)

    assert final["status"] == "CONFIRMED"
    assert Reservation.objects.filter(order_id=order["id"]).count() == 1
    assert Payment.objects.filter(order_id=order["id"]).count() == 1
    assert_audit_clean(saga)


def test_two_relays_at_once_lose_nothing(saga, buyer):
    for alias in relay_aliases():
        saga.relay(f"relay-{alias}-second", alias)
    orders = [place(buyer, [("SKU-A", 1)], token=token)
              for token in ["tok_ok", "tok_decline", "tok_ok", "tok_flaky"] * 5]

    assert wait_until(lambda: not SagaInstance.objects.filter(state__in=SagaInstance.ACTIVE).exists(),
                      timeout=60), saga.logs()

    statuses = dict(Order.objects.values_list("id", "status"))
    assert [statuses[o["id"]] for o in orders] == ["CONFIRMED", "FAILED", "CONFIRMED", "CONFIRMED"] * 5
    # SKIP LOCKED: no message was claimed by both relays at once.
    assert not outbox(publish_count__gt=1)
    assert all(timeline(o["id"])[-1][2] == "ok" for o in orders)
    assert_audit_clean(saga)
