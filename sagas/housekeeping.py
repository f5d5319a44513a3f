"""Housekeeping of the saga engine's tables: reset them for fresh demo data, purge what is only history.

The outbox, the inbox, the step guards and the dead letters exist in every service's database; saga
instances and their step log belong to the orchestrator (orders) but the tables exist wherever the `sagas`
app is migrated. Both functions therefore go over every database alias that has the table, whatever the
layout (one database, or one per service).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone

from sagas.models import DeadLetter, EventRecord, InboxMessage, OutboxMessage, SagaInstance, SagaStepLog, StepGuard

# Children before parents: the step log points at its saga.
ENGINE_MODELS: tuple[type[models.Model], ...] = (
    SagaStepLog, SagaInstance, OutboxMessage, InboxMessage, StepGuard, DeadLetter, EventRecord,
)
PURGE_BATCH = 10_000


def aliases_with(model: type[models.Model]) -> list[str]:
    """The database aliases that hold `model`'s table."""
    return [alias for alias in settings.DATABASES if router.allow_migrate_model(alias, model)]


def messages_reset() -> dict[tuple[str, str], int]:
    """Empty every table of the saga engine in every database: sagas, step logs, outbox, inbox, step guards
    and dead letters. For fresh demo data (`manage.py seed`); nothing may be running against them.

    Returns the rows deleted per (alias, table).
    """
    deleted: dict[tuple[str, str], int] = {}
    for model in ENGINE_MODELS:
        table = model._meta.db_table
        for alias in aliases_with(model):
            # One statement per table: the ORM's delete() would first load every saga to cascade by hand.
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                cursor.execute(f"DELETE FROM {connections[alias].ops.quote_name(table)}")
                deleted[(alias, table)] = cursor.rowcount
    return deleted


@dataclass(frozen=True)
class Retention:
    outbox: timedelta
    inbox: timedelta

    @classmethod
    def from_settings(cls) -> Retention:
        return cls(outbox=timedelta(hours=settings.OUTBOX_RETENTION_HOURS),
                   inbox=timedelta(hours=settings.INBOX_RETENTION_HOURS))


def duplicate_horizon() -> timedelta:
    """How long after its saga started a duplicate of a message can still arrive, at the very least.

    Every command of a saga is sent before the saga's deadline (re-sends included); a delivery that a worker
    took and never acknowledged comes back up to one visibility timeout later. A message can also wait in a
    queue for as long as its consumer is down, which no setting bounds: retention must be far longer.
    """
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    return timedelta(seconds=settings.SAGA_DEADLINE_SECONDS + visibility)


def _purgeable(retention: Retention, now: datetime) -> list[tuple[type[models.Model], models.Q]]:
    inbox_cutoff = now - retention.inbox
    return [
        # Published messages are history: a re-send is a new row, and a relay never publishes a marked row again.
        (OutboxMessage, models.Q(published_at__lt=now - retention.outbox)),
        # What makes a late duplicate harmless: kept as long as a duplicate could still arrive.
        (InboxMessage, models.Q(received_at__lt=inbox_cutoff)),
        # A tombstone fences a late action; the same horizon as the inbox.
        (StepGuard, models.Q(updated_at__lt=inbox_cutoff)),
        # A choreography's trace is history once its duplicates can no longer arrive.
        (EventRecord, models.Q(at__lt=inbox_cutoff)),
        # Only dead letters someone re-drove; the others wait for a person.
        (DeadLetter, models.Q(redriven_at__lt=inbox_cutoff)),
    ]


def messages_purge(*, retention: Retention | None = None, dry_run: bool = False) -> dict[tuple[str, str], int]:
    """Delete published outbox rows older than `retention.outbox`, and inbox rows, step guards and re-driven
    dead letters older than `retention.inbox`, in every database. In batches, so no statement holds its locks
    for long. Returns the rows deleted (or, with `dry_run`, that would be) per (alias, table).

    Raises ValueError if `retention.inbox` is shorter than duplicate_horizon(): purging an inbox row while a
    duplicate of its message may still arrive would let that duplicate run again.
    """
    retention = retention or Retention.from_settings()
    if retention.inbox < duplicate_horizon():
        raise ValueError(f"an inbox retention of {retention.inbox} is shorter than the {duplicate_horizon()} a "
                         "duplicate may still arrive after (saga deadline + broker visibility timeout)")
    now = timezone.now()
    counts: dict[tuple[str, str], int] = {}
    for model, condition in _purgeable(retention, now):
        for alias in aliases_with(model):
            rows = model.objects.using(alias).filter(condition)
            if dry_run:
                counts[(alias, model._meta.db_table)] = rows.count()
                continue
            total = 0
            while True:
                batch = model.objects.using(alias).filter(pk__in=rows.order_by().values("pk")[:PURGE_BATCH])
                deleted, _ = batch.delete()
                total += deleted
                if deleted < PURGE_BATCH:
                    break
            counts[(alias, model._meta.db_table)] = total
    return counts
