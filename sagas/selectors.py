"""Reads of the saga engine, for the admin, the audit, the load report and /metrics."""

from __future__ import annotations

from django.conf import settings
from django.db import connections
from django.db.models import Count, Q, Sum
from django.utils import timezone

from sagas.models import DeadLetter, SagaInstance, SagaStepLog
from sagas.outbox import outbox_backlog
from shop.routers import service_alias

# The states a reader outside the engine compares with (the audit), without the model.
SagaState = SagaInstance.State
SAGA_ACTIVE_STATES = frozenset(SagaInstance.ACTIVE)


def _saga_alias() -> str:
    return service_alias("orders")


def saga_counts() -> dict[str, int]:
    """Saga instances by state."""
    rows = SagaInstance.objects.using(_saga_alias()).values("state").annotate(n=Count("pk"))
    counts = {state: 0 for state in SagaInstance.State.values}
    counts.update({row["state"]: row["n"] for row in rows})
    return counts


def outbox_stats() -> dict:
    """Pending outbox messages over every database, and the age of the oldest."""
    pending, oldest = 0, 0.0
    for alias in settings.DATABASES:
        count, age = outbox_backlog(using=alias)
        pending += count
        oldest = max(oldest, age)
    return {"pending": pending, "oldest_pending_age_seconds": oldest}


def sagas_overdue() -> list[SagaInstance]:
    """Sagas not final although their deadline passed, and parked ones."""
    alias = _saga_alias()
    return list(
        SagaInstance.objects.using(alias).filter(state=SagaInstance.State.PARKED)
        | SagaInstance.objects.using(alias).filter(state__in=SagaInstance.ACTIVE, deadline__lt=timezone.now())
    )


def saga_find(*, saga_type: str, key: str, value: object) -> SagaInstance | None:
    """The saga of `saga_type` whose data holds `value` under `key` (the newest, should there be more)."""
    return (SagaInstance.objects.using(_saga_alias()).filter(saga_type=saga_type, **{f"data__{key}": value})
            .order_by("-created_at").first())


def saga_states_by_key(*, saga_type: str, key: str) -> dict[int, str]:
    """State of every saga of `saga_type`, by the value its data holds under `key` (the id of what it is about:
    the engine knows no service, so the caller names both)."""
    return {
        data[key]: state
        for data, state in SagaInstance.objects.using(_saga_alias()).filter(saga_type=saga_type)
        .values_list("data", "state")
    }


def flows_with_events(*, flow: str, events: tuple[str, ...]) -> dict[str, set[str]]:
    """For a choreography `flow`, which of `events` each flow instance emitted, over every database."""
    from sagas.models import EventRecord

    found: dict[str, set[str]] = {}
    for alias in settings.DATABASES:
        rows = (EventRecord.objects.using(alias).filter(flow=flow, event__in=events, consumer="")
                .values_list("flow_id", "event"))
        for flow_id, event in rows:
            found.setdefault(flow_id, set()).add(event)
    return found


def saga_backlog_count() -> int:
    """Sagas accepted and not final (running or compensating)."""
    return SagaInstance.objects.using(_saga_alias()).filter(state__in=SagaInstance.ACTIVE).count()


def step_duration_histogram(*, bounds: tuple[float, ...]) -> list[tuple[str, str, list[int], int, float]]:
    """Per (step, direction): how many replies came within each bound (seconds, cumulative), how many in all,
    and their summed seconds; from the step log's time between a command's publish and its reply."""
    buckets = {f"le{i}": Count("pk", filter=Q(duration_ms__lte=bound * 1000)) for i, bound in enumerate(bounds)}
    rows = (SagaStepLog.objects.using(_saga_alias()).filter(duration_ms__isnull=False)
            .values("step_name", "direction").annotate(**buckets, n=Count("pk"), ms=Sum("duration_ms")).order_by())
    return [(row["step_name"], row["direction"], [row[f"le{i}"] for i in range(len(bounds))], row["n"],
             (row["ms"] or 0.0) / 1000) for row in rows]


def outbox_pending_and_age(*, using: str) -> tuple[int, float]:
    """(unpublished messages, seconds since the oldest was written) in database `using`, in one query; the
    age by the clock of the moment, not of the surrounding transaction."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT count(*), greatest(0, coalesce(extract(epoch FROM clock_timestamp() - "
                       "min(created_at)), 0)) FROM sagas_outboxmessage WHERE published_at IS NULL")
        pending, age = cursor.fetchone()
    return pending, float(age)


def dead_letter_count(*, using: str) -> int:
    """Dead letters in database `using` that nobody re-drove."""
    return DeadLetter.objects.using(using).filter(redriven_at__isnull=True).count()


def outbox_due_waiting(*, using: str) -> tuple[int, float]:
    """(messages due and not published, seconds the oldest of them has been due) in database `using`: how far
    its relays are behind."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT count(*), greatest(0, coalesce(extract(epoch FROM clock_timestamp() - "
                       "min(available_at)), 0)) FROM sagas_outboxmessage "
                       "WHERE published_at IS NULL AND available_at <= clock_timestamp()")
        waiting, age = cursor.fetchone()
    return waiting, float(age)
