"""Housekeeping of the engine's tables: `manage.py seed` empties them, `manage.py purge_messages` deletes only
history older than its retention, in every database of the layout (one, or one per service)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from sagas.housekeeping import ENGINE_MODELS, aliases_with, duplicate_horizon
from sagas.models import DeadLetter, EventRecord, InboxMessage, OutboxMessage, SagaInstance, SagaStepLog, StepGuard

# Marked saga so that the per-service pass of `make test` runs them against one database per service too.
pytestmark = [pytest.mark.saga, pytest.mark.django_db(databases="__all__")]

HOURS = timedelta(hours=1)


def _rows() -> dict[tuple[str, str], int]:
    return {(alias, model.__name__): model.objects.using(alias).count()
            for model in ENGINE_MODELS for alias in aliases_with(model)}


def _fill(alias: str, *, age: timedelta, tag: str) -> None:
    """One row of every engine table in `alias`, every timestamp `age` in the past."""
    at = timezone.now() - age
    saga = SagaInstance.objects.using(alias).create(saga_type="order", data={"tag": tag}, deadline=at)
    SagaStepLog.objects.using(alias).create(saga=saga, step=1, step_name="reserve_stock", direction="action",
                                            attempt=1, outcome="ok")
    published = OutboxMessage.objects.using(alias).create(queue="sagas", task="sagas.reply", payload={"tag": tag},
                                                          available_at=at)
    pending = OutboxMessage.objects.using(alias).create(queue="sagas", task="sagas.reply", payload={"tag": tag},
                                                        available_at=at)
    OutboxMessage.objects.using(alias).filter(pk=published.pk).update(created_at=at, published_at=at,
                                                                      publish_count=1)
    OutboxMessage.objects.using(alias).filter(pk=pending.pk).update(created_at=at)
    inbox = InboxMessage.objects.using(alias).create(message_id=uuid.uuid4(), consumer=f"c-{tag}")
    InboxMessage.objects.using(alias).filter(pk=inbox.pk).update(received_at=at)
    guard = StepGuard.objects.using(alias).create(consumer=f"c-{tag}", key=f"{uuid.uuid4()}:charge_payment",
                                                  state="compensated")
    StepGuard.objects.using(alias).filter(pk=guard.pk).update(updated_at=at)
    redriven = DeadLetter.objects.using(alias).create(consumer=f"c-{tag}", task="sagas.reply", error="boom",
                                                      payload={"tag": tag})
    waiting = DeadLetter.objects.using(alias).create(consumer=f"c-{tag}", task="sagas.reply", error="boom",
                                                     payload={"tag": tag})
    DeadLetter.objects.using(alias).filter(pk=redriven.pk).update(created_at=at, redriven_at=at)
    DeadLetter.objects.using(alias).filter(pk=waiting.pk).update(created_at=at)
    EventRecord.objects.using(alias).create(flow="order", flow_id=tag, event_id=uuid.uuid4(), event="OrderPlaced",
                                            service="orders", consumer=f"c-{tag}", at=at, deliveries=1)


def test_every_database_has_every_engine_table():
    # The reset and the purge go over aliases_with(): in the per-service layout that must be all of them.
    assert {alias for model in ENGINE_MODELS for alias in aliases_with(model)} == set(settings.DATABASES)


def test_seed_empties_the_engine_tables_of_every_database(capsys):
    for alias in settings.DATABASES:
        _fill(alias, age=HOURS, tag="old")
    assert all(count > 0 for count in _rows().values()), _rows()

    call_command("seed", customers=1, products=1)

    left = {key: count for key, count in _rows().items() if count}
    assert left == {}, f"rows left after seed: {left}"


def test_purge_deletes_only_history_older_than_the_retention(settings, capsys):
    settings.OUTBOX_RETENTION_HOURS = 24
    settings.INBOX_RETENTION_HOURS = 168
    for alias in settings.DATABASES:
        _fill(alias, age=200 * HOURS, tag="old")     # past both retentions
        _fill(alias, age=30 * HOURS, tag="middle")   # past the outbox's only
        _fill(alias, age=HOURS, tag="new")           # within both

    call_command("purge_messages")
    out = capsys.readouterr().out

    for alias in settings.DATABASES:
        outbox = OutboxMessage.objects.using(alias)
        # Published rows of 200 h and 30 h went; every pending row stays, however old: it is not sent yet.
        assert sorted((m.payload["tag"], m.published_at is not None) for m in outbox.all()) == [
            ("middle", False), ("new", False), ("new", True), ("old", False)], f"{alias}: {list(outbox.values())}"
        assert sorted(InboxMessage.objects.using(alias).values_list("consumer", flat=True)) == ["c-middle", "c-new"]
        assert sorted(StepGuard.objects.using(alias).values_list("consumer", flat=True)) == ["c-middle", "c-new"]
        # A choreography's trace rows go with the inbox rows of the same age.
        assert sorted(EventRecord.objects.using(alias).values_list("consumer", flat=True)) == ["c-middle", "c-new"]
        # A dead letter nobody re-drove waits for a person, whatever its age.
        letters = sorted((d.consumer, d.redriven_at is None) for d in DeadLetter.objects.using(alias).all())
        assert letters == [("c-middle", False), ("c-middle", True), ("c-new", False), ("c-new", True),
                           ("c-old", True)], f"{alias}: {letters}"
        # Sagas and their step log are not messages: the purge leaves them alone.
        assert SagaInstance.objects.using(alias).count() == 3
        for table, count in [("sagas_outboxmessage", 2), ("sagas_inboxmessage", 1), ("sagas_stepguard", 1),
                             ("sagas_deadletter", 1), ("sagas_eventrecord", 1)]:
            line = f"{alias:<10} {table:<26} deleted {count}"
            assert line in out, f"expected {line!r} in:\n{out}"
    assert f"deleted {6 * len(settings.DATABASES)} rows in total" in out, out


def test_dry_run_counts_and_deletes_nothing(capsys):
    for alias in settings.DATABASES:
        _fill(alias, age=1000 * HOURS, tag="old")
    before = _rows()

    call_command("purge_messages", dry_run=True)
    out = capsys.readouterr().out

    assert _rows() == before
    # Per database: the published outbox row, the inbox row, the step guard, the re-driven dead letter and
    # the trace row.
    assert f"would delete {5 * len(settings.DATABASES)} rows in total" in out, out


def test_purge_refuses_an_inbox_retention_a_duplicate_could_outlive():
    # Saga deadline + visibility timeout: a command re-sent just before its saga's deadline and taken by a
    # worker that died comes back that late; its inbox row must still be there to make it harmless.
    horizon_hours = duplicate_horizon().total_seconds() / 3600
    assert duplicate_horizon() >= timedelta(seconds=settings.SAGA_DEADLINE_SECONDS), duplicate_horizon()
    with pytest.raises(CommandError, match="shorter than"):
        call_command("purge_messages", inbox_hours=horizon_hours * 0.9)
    call_command("purge_messages", inbox_hours=horizon_hours * 1.1)


def test_a_sweepers_outbox_retention_purges_old_published_rows_at_most_once_a_period(settings):
    from sagas.outbox import OutboxRetention

    settings.OUTBOX_RETENTION_HOURS = 24
    for alias in settings.DATABASES:
        _fill(alias, age=30 * HOURS, tag="old")
    retention = OutboxRetention(every_seconds=600)

    retention.maybe_purge()
    for alias in settings.DATABASES:
        _fill(alias, age=30 * HOURS, tag="later")
    retention.maybe_purge()  # within the period: nothing more goes

    for alias in settings.DATABASES:
        left = sorted((m.payload["tag"], m.published_at is not None) for m in OutboxMessage.objects.using(alias))
        assert left == [("later", False), ("later", True), ("old", False)], f"{alias}: {left}"
