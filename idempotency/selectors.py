"""Reads of idempotency keys."""

from __future__ import annotations

from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now

from idempotency.models import IdempotencyKey


def key_get(*, user_id: int, key: str) -> IdempotencyKey | None:
    """The key with `expired` and `lease_over` judged by the database clock, the one every process shares."""
    return IdempotencyKey.objects.filter(user_id=user_id, key=key).annotate(
        expired=ExpressionWrapper(Q(expires_at__lte=Now()), output_field=BooleanField()),
        lease_over=ExpressionWrapper(Q(locked_until__lte=Now()), output_field=BooleanField()),
    ).first()


def keys_expired() -> QuerySet[IdempotencyKey]:
    return IdempotencyKey.objects.filter(expires_at__lte=Now())
