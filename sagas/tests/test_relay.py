"""The relay publishes what `app.send_task` would: a worker cannot tell the two apart. On the real broker of
the run (Redis, or RabbitMQ in the RabbitMQ pass); the test plays the relay (`no_processes`: no other relay
takes its rows)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.utils import timezone
from kombu import Connection, Message, Queue

from sagas.models import OutboxMessage
from sagas.outbox import Relay
from shop.celery import app

pytestmark = [pytest.mark.saga, pytest.mark.django_db(transaction=True)]

QUEUE = "relay-test"


@pytest.fixture
def queue() -> Iterator[Queue]:
    with app.connection_for_write() as connection:
        bound = app.amqp.queues[QUEUE].bind(connection.default_channel)
        bound.declare()
        bound.purge()
    yield app.amqp.queues[QUEUE]
    with app.connection_for_write() as connection:
        app.amqp.queues[QUEUE].bind(connection.default_channel).delete()


def _take_all(queue: Queue) -> list[Message]:
    messages = []
    with app.connection_for_write() as connection:
        bound = queue.bind(connection.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            messages.append(message)
    return messages


def _as_received(message: Message) -> dict:
    """What a worker reads of a message: all of it but the broker's own delivery tag."""
    properties = {k: v for k, v in message.properties.items() if k not in ("delivery_tag", "delivery_info")}
    return {"headers": message.headers, "properties": properties, "body": message.body,
            "content_type": message.content_type, "content_encoding": message.content_encoding,
            "routing_key": message.delivery_info.get("routing_key"),
            "exchange": message.delivery_info.get("exchange")}


def _payload() -> dict:
    return {"saga_id": str(uuid.uuid4()), "step": 2, "data": {"order_id": 7, "lines": [["SKU-0001", 2]],
                                                             "name": "Zoë"}}


def test_the_relay_publishes_what_send_task_publishes(queue):
    task_id, payload = str(uuid.uuid4()), _payload()
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection, auto_declare=False)
        app.send_task("sagas.payments.charge", args=[payload], queue=QUEUE, task_id=task_id, producer=producer)
    relay = Relay(using="default")
    try:
        producer = relay.producer()
        with producer.batch():
            relay.publish(producer, task="sagas.payments.charge", task_id=task_id, payload=payload, queue=QUEUE)
    finally:
        relay.close()

    sent, relayed = _take_all(queue)

    assert _as_received(relayed) == _as_received(sent)
    assert relayed.headers["id"] == task_id and relayed.headers["task"] == "sagas.payments.charge"
    assert relayed.properties["delivery_mode"] == 2  # persistent
    assert relayed.decode()[0] == [payload]


def _outbox(count: int) -> list[OutboxMessage]:
    now = timezone.now()
    return OutboxMessage.objects.bulk_create([
        OutboxMessage(message_id=uuid.uuid4(), queue=QUEUE, task="sagas.test.noop", payload=_payload(),
                      available_at=now) for _ in range(count)])


def test_a_batch_is_published_to_its_queue_with_the_message_ids_as_task_ids_and_marked(no_processes, queue):
    rows = _outbox(25)
    relay = Relay(using="default", batch_size=10)
    try:
        assert relay.drain() == 25
    finally:
        relay.close()

    received = _take_all(queue)

    assert sorted(m.headers["id"] for m in received) == sorted(str(r.message_id) for r in rows)
    assert {m.headers["task"] for m in received} == {"sagas.test.noop"}
    by_id = {str(r.message_id): r.payload for r in rows}
    assert all(m.decode()[0] == [by_id[m.headers["id"]]] for m in received)
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    assert set(OutboxMessage.objects.values_list("publish_count", flat=True)) == {1}


def test_publish_twice_delivers_every_message_two_times(no_processes, queue, settings):
    settings.OUTBOX_RELAY_FAULT = "publish-twice"
    rows = _outbox(5)
    relay = Relay(using="default")
    try:
        assert relay.publish_batch() == 5
    finally:
        relay.close()

    ids = [m.headers["id"] for m in _take_all(queue)]

    assert sorted(ids) == sorted(2 * [str(r.message_id) for r in rows])


def test_a_batch_the_broker_did_not_take_is_not_marked(no_processes, queue, settings):
    """The broker unreachable at publish: the claim rolls back, the rows stay pending for the next try."""
    _outbox(3)
    relay = Relay(using="default")
    # Nothing listens on port 1.
    dead = "amqp://guest:guest@127.0.0.1:1//" if settings.CELERY_BROKER_URL.startswith("amqp") else \
        "redis://127.0.0.1:1/0"
    relay._producer = app.amqp.Producer(Connection(dead, connect_timeout=1), auto_declare=False)
    try:
        with pytest.raises(Exception) as raised:
            relay.publish_batch()
    finally:
        relay.close()

    assert isinstance(raised.value, relay.expected_errors()), raised.value
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 3
    assert set(OutboxMessage.objects.values_list("publish_count", flat=True)) == {0}


def test_on_redis_a_batch_goes_in_one_pipeline(settings):
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("RabbitMQ confirms each publish; pipelines are Redis's")
    relay = Relay(using="default")
    try:
        # kombu falls back to one round trip per message when the Redis client may replay a pipeline.
        assert relay.producer().supports_batch_publish
    finally:
        relay.close()
