"""Reads of the saga engine, for the admin, the audit and the load report."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from sagas.models import SagaInstance
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
