"""RabbitMQ as the broker (the RabbitMQ pass of `make test`, CELERY_BROKER_URL=amqp://...): durable queues,
persistent messages, publisher confirms, and acknowledgements instead of a visibility timeout, so a worker
killed under load hands its messages back at once and loses no order."""

from __future__ import annotations

import threading
import time

import amqp.exceptions
import pytest
from django.conf import settings as django_settings
from django.db import connections
from kombu import Queue

from orders.models import Order
from payments.models import Payment
from sagas.models import OutboxMessage
from sagas.outbox import Relay
from sagas.processes import COMMAND_QUEUES, QUEUES
from sagas.tests.test_crashes import _assert_delivered_again_and_charged_once, _payments_worker, _start_slow_charge
from sagas.tests.test_order_saga import assert_audit_clean, place, wait_final
from shop.celery import app
from shop.testing import order_body, wait_until

pytestmark = [
    pytest.mark.saga, pytest.mark.django_db(transaction=True, databases="__all__"),
    pytest.mark.skipif(not django_settings.CELERY_BROKER_IS_AMQP,
                       reason="RabbitMQ only: `make test` runs these in its RabbitMQ pass (CELERY_BROKER_URL=amqp://)"),
]


@pytest.fixture
def buyer(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=500, price_cents=1000)
    return client_for(make_customer(balance_cents=10_000_000))


def test_the_saga_queues_are_durable(saga, buyer):
    wait_final(buyer, place(buyer, [("SKU-A", 1)])["id"], saga)
    with app.connection_for_write() as connection:
        for name in QUEUES:
            # Declaring a queue again with other properties than it has is refused: these exist, durable.
            with pytest.raises(amqp.exceptions.PreconditionFailed, match="durable"):
                Queue(name, durable=False).bind(connection.channel()).declare()


def test_the_relay_publishes_persistent_messages_with_confirms(no_processes, buyer):
    place(buyer, [("SKU-A", 1)])
    relay = Relay(using="default")
    try:
        assert relay.publish_batch() == 1
        channel = relay.producer().channel
        # The channel is in confirm mode: every publish waited for the broker's ack.
        assert channel.connection.confirm_publish and channel._confirm_selected
    finally:
        relay.close()
    with app.connection_for_write() as connection:
        message = app.amqp.queues["inventory"].bind(connection.default_channel).get(no_ack=True)
    assert message is not None
    assert message.properties["delivery_mode"] == 2
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0


def test_a_worker_killed_inside_a_charge_gets_it_back_at_once(saga, buyer):
    """No visibility timeout: the broker redelivers the unacknowledged charge as soon as the killed worker's
    connection is gone, to the worker started in its place."""
    order, command = _start_slow_charge(saga, buyer)

    saga.kill("worker-payments")
    _payments_worker(saga)

    _assert_delivered_again_and_charged_once(saga, buyer, order, command)
    assert_audit_clean(saga)


def test_a_worker_sigkilled_under_load_loses_no_order(saga, buyer):
    """Clients place orders while the worker of the service queues is SIGKILLed twice and started again:
    every accepted order ends CONFIRMED, charged once; the audit is clean."""
    saga.stop("worker")
    saga.worker("worker-replies", ("sagas",))
    saga.worker("worker-commands", COMMAND_QUEUES, concurrency=2, PAYMENT_LATENCY_MS="50")
    placed: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        try:
            while not stop.is_set() and len(placed) < 60:
                response = buyer.post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json")
                if response.status_code == 202:
                    placed.append(response.json()["id"])
                elif response.status_code != 503:  # overloaded: refused before anything was written
                    errors.append(f"{response.status_code} {response.content[:200]!r}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):
            assert wait_until(lambda: Order.objects.filter(status=Order.Status.CONFIRMED).count() >= len(placed) // 3
                              and len(placed) >= 10, timeout=60), saga.logs()
            saga.kill("worker-commands")
            time.sleep(1)
            saga.worker("worker-commands", COMMAND_QUEUES, concurrency=2, PAYMENT_LATENCY_MS="50")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    assert errors == []
    assert len(placed) >= 10
    assert wait_until(lambda: not Order.objects.filter(status=Order.Status.PENDING).exists(), timeout=120), \
        saga.logs()
    statuses = dict(Order.objects.filter(pk__in=placed).values_list("id", "status"))
    assert len(statuses) == len(placed)
    assert set(statuses.values()) == {Order.Status.CONFIRMED}, statuses
    charged = list(Payment.objects.filter(order_id__in=placed).values_list("order_id", flat=True))
    assert sorted(charged) == sorted(placed)
    assert_audit_clean(saga)
