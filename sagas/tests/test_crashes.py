"""Processes die at the worst moments; every saga still ends CONFIRMED or FAILED and the audit is clean."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from django.db import connections

from inventory.models import Reservation
from orders.models import Order
from payments.models import Payment
from sagas.models import InboxMessage, OutboxMessage, SagaInstance, SagaStepLog
from sagas.processes import QUEUES, relay_aliases
from sagas.testing import outbox
from sagas.tests.conftest import UNACKED, UNACKED_INDEX, broker, broker_backlog
from sagas.tests.test_order_saga import assert_audit_clean, place, saga_of, timeline, wait_final
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


# A gateway this slow keeps the charge running long enough to kill its worker inside it, even on a loaded
# machine; the worker's connection carries this name, so the test sees when the charge has begun.
CHARGE_LATENCY_MS = "6000"
PAYMENTS_APP = "crash-test-payments"
# Visibility timeout of the worker that is started after the kill: the broker hands an unacknowledged
# message out again only once it is older than this (5 s is the least the settings allow).
VISIBILITY_TIMEOUT = 5


def _payments_worker(stack, **env: str) -> None:  # type: ignore[no-untyped-def]
    # One pool process (so the test knows which one runs the charge), and INFO logging, where Celery writes a
    # line for every delivery it receives.
    stack.worker("worker-payments", ("payments",), concurrency=1, loglevel="INFO", PGAPPNAME=PAYMENTS_APP, **env)


def _charge_in_progress(app_name: str = PAYMENTS_APP) -> bool:
    """The payments worker is inside a charge: its transaction has written (the inbox row, the step guard)
    and not committed, while the gateway takes its time. Only this test run's databases count (the test
    database and its per-service siblings), not another run's on the same server."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                       "AND backend_xid IS NOT NULL "
                       "AND (datname = current_database() OR datname LIKE current_database() || '\\_%%')",
                       [app_name])
        return cursor.fetchone()[0] > 0


def _charge_command() -> OutboxMessage:
    commands = outbox(task="payments.charge")
    assert len(commands) == 1, f"expected one charge command in the outbox, got {[vars(c) for c in commands]}"
    return commands[0]


def _unacked_seconds(message_id: str) -> float | None:
    """How long ago a worker took `message_id` without acknowledging it (None: the broker has no such copy)."""
    client = broker()
    assert client is not None
    for tag, raw in client.hgetall(UNACKED).items():
        if json.loads(raw)[0]["headers"]["id"] == message_id:
            score = client.zscore(UNACKED_INDEX, tag)
            return None if score is None else time.time() - score
    return None


def _deliveries(stack, message_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    log = (stack.log_dir / "worker-payments.log").read_text(errors="replace")
    return [line for line in log.splitlines() if f"payments.charge[{message_id}] received" in line]


def _needs_redis_broker() -> None:
    if broker() is None:
        pytest.skip("watches the Redis broker's unacknowledged messages")


def _start_slow_charge(stack, client) -> tuple[dict, OutboxMessage]:  # type: ignore[no-untyped-def]
    # Nothing but the broker may bring the charge back: no sweeper to re-send it.
    stack.stop("sweeper")
    stack.stop("worker")
    stack.worker("worker-rest", tuple(q for q in QUEUES if q != "payments"))
    _payments_worker(stack, PAYMENT_LATENCY_MS=CHARGE_LATENCY_MS)
    order = place(client, [("SKU-A", 1)])
    assert wait_until(_charge_in_progress, timeout=60), f"the charge never started\n{stack.logs()}"
    return order, _charge_command()


def _assert_delivered_again_and_charged_once(stack, client, order: dict, command: OutboxMessage) -> None:  # type: ignore[no-untyped-def]
    final = wait_final(client, order["id"], stack)
    message_id = str(command.message_id)
    assert final["status"] == "CONFIRMED", final
    payments = list(Payment.objects.filter(order_id=order["id"]).values("status", "amount_cents"))
    assert len(payments) == 1, payments
    # The broker delivered the very message twice: to the worker that died in it, then again.
    deliveries = _deliveries(stack, message_id)
    assert len(deliveries) == 2, f"{deliveries}\n{stack.logs()}"
    # ... and nobody else sent it: the relay published it once, the sweeper did not run.
    command.refresh_from_db(using=command._state.db)
    assert (len(outbox(task="payments.charge")), command.publish_count) == (1, 1), vars(command)
    log = list(SagaStepLog.objects.filter(saga=saga_of(order["id"])).values_list("step_name", "outcome"))
    assert ("charge_payment", "resent") not in log, log
    assert InboxMessage.objects.using(service_alias("payments")).filter(
        consumer="payments", message_id=command.message_id).count() == 1


def test_a_worker_killed_inside_a_charge_gets_it_again_from_the_broker(saga, buyer):
    """acks_late: the message of a worker SIGKILLed mid-task stays unacknowledged in the broker, which hands it
    out again after the visibility timeout to the worker started in its place."""
    _needs_redis_broker()
    order, command = _start_slow_charge(saga, buyer)
    message_id = str(command.message_id)

    saga.kill("worker-payments")

    # Killed inside the charge: nothing of it was committed.
    assert not InboxMessage.objects.using(service_alias("payments")).filter(message_id=command.message_id).exists()
    assert not Payment.objects.filter(order_id=order["id"]).exists()
    # The broker still holds the message as taken and not acknowledged (with acks_late off it would be gone).
    assert _unacked_seconds(message_id) is not None, f"no unacknowledged copy: {broker_backlog()}"
    # The new worker gives back, as it starts, what is unacknowledged for longer than its visibility timeout.
    assert wait_until(lambda: (_unacked_seconds(message_id) or 0) > VISIBILITY_TIMEOUT + 0.5, timeout=30), \
        broker_backlog()
    _payments_worker(saga, CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))

    _assert_delivered_again_and_charged_once(saga, buyer, order, command)
    assert_audit_clean(saga)


def test_a_pool_process_killed_inside_a_charge_hands_it_back_at_once(saga, buyer):
    """reject_on_worker_lost: when the process running the task dies, the worker gives the message back to the
    broker (instead of acknowledging it as failed) and a new pool process runs it again."""
    order, command = _start_slow_charge(saga, buyer)
    [pool_process] = saga.pool_processes("worker-payments")

    os.kill(pool_process, signal.SIGKILL)

    _assert_delivered_again_and_charged_once(saga, buyer, order, command)
    assert saga.running("worker-payments"), saga.logs()
    assert_audit_clean(saga)


def test_when_the_broker_is_slower_than_the_sweeper_its_late_copy_changes_nothing(saga, buyer):
    """A worker dies inside a charge and the broker keeps its message for the visibility timeout: the sweeper
    re-sends the charge first (same message id) and the saga confirms; the broker's copy, delivered later, finds
    the inbox row and changes nothing."""
    _needs_redis_broker()
    saga.stop("worker")
    saga.worker("worker-rest", tuple(q for q in QUEUES if q != "payments"))
    _payments_worker(saga, PAYMENT_LATENCY_MS=CHARGE_LATENCY_MS)
    order = place(buyer, [("SKU-A", 1)])
    assert wait_until(_charge_in_progress, timeout=60), f"the charge never started\n{saga.logs()}"
    message_id = str(_charge_command().message_id)
    saga.kill("worker-payments")
    # Default visibility timeout (minutes): only the sweeper can finish this saga within the test.
    _payments_worker(saga)

    final = wait_final(buyer, order["id"], saga)

    assert final["status"] == "CONFIRMED", final
    log = list(SagaStepLog.objects.filter(saga=saga_of(order["id"])).values_list("step_name", "outcome"))
    assert ("charge_payment", "resent") in log, log
    assert _unacked_seconds(message_id) is not None, broker_backlog()
    # Now the broker's copy: a worker with a short visibility timeout takes it back and runs it.
    assert wait_until(lambda: (_unacked_seconds(message_id) or 0) > VISIBILITY_TIMEOUT + 0.5, timeout=30), \
        broker_backlog()
    _payments_worker(saga, CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))
    assert wait_until(lambda: _unacked_seconds(message_id) is None and not broker_backlog(), timeout=60), \
        broker_backlog()
    assert wait_until(lambda: len(_deliveries(saga, message_id)) >= 3, timeout=30), _deliveries(saga, message_id)
    payments = list(Payment.objects.filter(order_id=order["id"]).values("status", "amount_cents"))
    assert payments == [{"status": Payment.Status.CHARGED, "amount_cents": 1000}], payments
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
