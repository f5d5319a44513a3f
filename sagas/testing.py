"""Test helpers that look at the outbox and inbox of every database at once (one, or one per service)."""

from __future__ import annotations

from django.conf import settings

from sagas.models import InboxMessage, OutboxMessage


def outbox(**filters: object) -> list[OutboxMessage]:
    return [m for alias in settings.DATABASES for m in OutboxMessage.objects.using(alias).filter(**filters)]


def inbox_count() -> int:
    return sum(InboxMessage.objects.using(alias).count() for alias in settings.DATABASES)
