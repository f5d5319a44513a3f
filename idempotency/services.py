"""Writes of idempotency keys: claim a key, store its response or release it, purge expired ones.

Every statement here runs on its own (autocommit), never inside the request's business transaction: a key
must be visible as taken to every other request at once, and must never hold a row lock while the work runs.
Times come from the database clock (`now()`), so web processes with drifting clocks agree on leases.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections, router
from django.db.models.functions import Now

from idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from idempotency.models import IdempotencyKey
from idempotency.selectors import key_get, keys_expired

# Lost races (a key released or expired between two statements) are retried this many times, then the
# client is told the key is in use and retries itself.
CLAIM_ATTEMPTS = 5


@dataclass(frozen=True)
class Claim:
    """The right to run the request under `key` until the lease ends; proven by `lock_token`."""

    record_id: int
    lock_token: uuid.UUID
    key: str
    # An earlier attempt under this key may already have done the work (its lease ran out, or the key had
    # expired and starts over): the request must look for that work before doing it again.
    resumed: bool


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str
    headers: dict[str, str]


def request_fingerprint(*, method: str, path: str, body: Any) -> str:
    """sha256 of the method, the path and the body as canonical JSON: key order and whitespace do not count."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical}".encode()).hexdigest()


def key_claim(*, user_id: int, key: str, method: str, path: str, fingerprint: str) -> Claim | StoredResponse:
    """Take `key` for this request, or say why not.

    Returns a Claim to run the request, or the StoredResponse to replay. Raises IdempotencyKeyReused (422) if
    the key was used for another request, IdempotencyKeyInUse (409) while another attempt holds it.
    """
    for _ in range(CLAIM_ATTEMPTS):
        claim = _insert(user_id=user_id, key=key, method=method, path=path, fingerprint=fingerprint)
        if claim is not None:
            return claim
        record = key_get(user_id=user_id, key=key)
        if record is None:
            continue  # released since the insert: try again
        if record.expired:
            claim = _restart_expired(record, method=method, path=path, fingerprint=fingerprint)
        elif record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(f"Idempotency-Key {key!r} was first used with a different request.")
        elif record.state == IdempotencyKey.State.COMPLETED:
            return StoredResponse(status=record.response_status, body=record.response_body,
                                  headers=dict(record.response_headers))
        elif record.lease_over:
            claim = _take_over(record)
        else:
            raise IdempotencyKeyInUse("Retry when the first request has finished.")
        if claim is not None:
            return claim
    raise IdempotencyKeyInUse("The key changed hands while this request tried to take it; retry.")


def _insert(*, user_id: int, key: str, method: str, path: str, fingerprint: str) -> Claim | None:
    # ON CONFLICT DO NOTHING: a concurrent claimant waits only for this one-statement transaction, and learns
    # from the empty RETURNING that it lost, without an error or a savepoint.
    token = uuid.uuid4()
    alias = router.db_for_write(IdempotencyKey)
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {IdempotencyKey._meta.db_table}
                (user_id, key, method, path, fingerprint, state, lock_token, locked_until,
                 response_body, response_headers, created_at, expires_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s, '', '{{}}', now(), now() + %s)
            ON CONFLICT (user_id, key) DO NOTHING
            RETURNING id
            """,
            [user_id, key, method, path, fingerprint, IdempotencyKey.State.LOCKED, token, _lease(), _ttl()],
        )
        row = cursor.fetchone()
    return None if row is None else Claim(record_id=row[0], lock_token=token, key=key, resumed=False)


def _take_over(record: IdempotencyKey) -> Claim | None:
    """Take a lease that ran out: its holder died (or is hopelessly slow). Only one retry can win it."""
    token = uuid.uuid4()
    won = IdempotencyKey.objects.filter(
        pk=record.pk, state=IdempotencyKey.State.LOCKED, lock_token=record.lock_token, locked_until__lte=Now(),
    ).update(lock_token=token, locked_until=Now() + _lease())
    return Claim(record_id=record.pk, lock_token=token, key=record.key, resumed=True) if won else None


def _restart_expired(record: IdempotencyKey, *, method: str, path: str, fingerprint: str) -> Claim | None:
    """An expired key is a new key: whatever it stored is forgotten (purge would have deleted it)."""
    token = uuid.uuid4()
    won = IdempotencyKey.objects.filter(pk=record.pk, expires_at__lte=Now()).update(
        method=method, path=path, fingerprint=fingerprint, state=IdempotencyKey.State.LOCKED, lock_token=token,
        locked_until=Now() + _lease(), response_status=None, response_body="", response_headers={},
        created_at=Now(), completed_at=None, expires_at=Now() + _ttl(),
    )
    return Claim(record_id=record.pk, lock_token=token, key=record.key, resumed=True) if won else None


def key_complete(*, claim: Claim, status: int, body: str, headers: dict[str, str]) -> bool:
    """Store the final response of the claimed request. False if the lease was lost to a retry meanwhile:
    that retry answers for the key now (with the same order, found by its request key)."""
    return bool(IdempotencyKey.objects.filter(
        pk=claim.record_id, lock_token=claim.lock_token, state=IdempotencyKey.State.LOCKED,
    ).update(
        state=IdempotencyKey.State.COMPLETED, lock_token=None, locked_until=None, response_status=status,
        response_body=body, response_headers=headers, completed_at=Now(),
    ))


def key_release(*, claim: Claim) -> None:
    """Forget the claimed key, so that a retry runs the request again (after a validation error or a fault)."""
    IdempotencyKey.objects.filter(
        pk=claim.record_id, lock_token=claim.lock_token, state=IdempotencyKey.State.LOCKED,
    ).delete()


def keys_purge_expired() -> int:
    deleted, _ = keys_expired().delete()
    return deleted


def keys_reset() -> None:
    IdempotencyKey.objects.all().delete()


def _lease() -> timedelta:
    return timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)


def _ttl() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
