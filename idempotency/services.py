"""Writes of idempotency keys: claim a key, store its response or release it, purge expired ones.

Every write here is a short transaction of its own, never part of the request's business transaction: a key
must be visible as taken to every other request at once, and must never hold a row lock while the work runs.
Times come from the database clock, so web processes with drifting clocks agree on leases: always
statement_timestamp(), the clock of Django's Now() in the selectors, not now(), which stands still for a whole
transaction.

Those transactions commit without waiting for the WAL flush (synchronous_commit off, for them alone), which
would otherwise triple the flushes of every order. The order row is the durable record: it carries the key
and commits synchronously, which also flushes the claim written before it. A PostgreSQL crash can therefore
lose only the last moments of stored responses or releases; a retry then finds the order by its key, or, when
the first attempt placed nothing (its transaction rolled back), runs again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections, router

from idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from idempotency.models import IdempotencyKey
from idempotency.selectors import key_get, keys_expired

# Lost races (a key released or expired between two statements) are retried this many times, then the
# client is told the key is in use and retries itself.
CLAIM_ATTEMPTS = 5
TABLE = IdempotencyKey._meta.db_table


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
    rows = _write(
        """
        INSERT INTO {table} (user_id, key, method, path, fingerprint, state, lock_token, locked_until,
                             response_body, response_headers, created_at, expires_at)
        SELECT %s, %s, %s, %s, %s, %s, %s, statement_timestamp() + %s, '', '{{}}', statement_timestamp(),
               statement_timestamp() + %s
        FROM {async_commit}
        ON CONFLICT (user_id, key) DO NOTHING
        RETURNING id
        """,
        [user_id, key, method, path, fingerprint, IdempotencyKey.State.LOCKED, token, _lease(), _ttl()],
    )
    return Claim(record_id=rows[0][0], lock_token=token, key=key, resumed=False) if rows else None


def _take_over(record: IdempotencyKey) -> Claim | None:
    """Take a lease that ran out: its holder died (or is hopelessly slow). Only one retry can win it."""
    token = uuid.uuid4()
    rows = _write(
        """
        UPDATE {table} SET lock_token = %s, locked_until = statement_timestamp() + %s FROM {async_commit}
        WHERE id = %s AND state = %s AND lock_token = %s AND locked_until <= statement_timestamp()
        RETURNING id
        """,
        [token, _lease(), record.pk, IdempotencyKey.State.LOCKED, record.lock_token],
    )
    return Claim(record_id=record.pk, lock_token=token, key=record.key, resumed=True) if rows else None


def _restart_expired(record: IdempotencyKey, *, method: str, path: str, fingerprint: str) -> Claim | None:
    """An expired key is a new key: whatever it stored is forgotten (purge would have deleted it)."""
    token = uuid.uuid4()
    rows = _write(
        """
        UPDATE {table} SET method = %s, path = %s, fingerprint = %s, state = %s, lock_token = %s,
            locked_until = statement_timestamp() + %s, response_status = NULL, response_body = '',
            response_headers = '{{}}',
            created_at = statement_timestamp(), completed_at = NULL, expires_at = statement_timestamp() + %s
        FROM {async_commit}
        WHERE id = %s AND expires_at <= statement_timestamp()
        RETURNING id
        """,
        [method, path, fingerprint, IdempotencyKey.State.LOCKED, token, _lease(), _ttl(), record.pk],
    )
    return Claim(record_id=record.pk, lock_token=token, key=record.key, resumed=True) if rows else None


def key_complete(*, claim: Claim, status: int, body: str, headers: dict[str, str]) -> bool:
    """Store the final response of the claimed request. False if the lease was lost to a retry meanwhile:
    that retry answers for the key now (with the same order, found by its request key)."""
    rows = _write(
        """
        UPDATE {table} SET state = %s, lock_token = NULL, locked_until = NULL, response_status = %s,
            response_body = %s, response_headers = %s::jsonb, completed_at = statement_timestamp()
        FROM {async_commit}
        WHERE id = %s AND lock_token = %s AND state = %s
        RETURNING id
        """,
        [IdempotencyKey.State.COMPLETED, status, body, json.dumps(headers), claim.record_id, claim.lock_token,
         IdempotencyKey.State.LOCKED],
    )
    return bool(rows)


def key_release(*, claim: Claim) -> None:
    """Forget the claimed key, so that a retry runs the request again (after a validation error or a fault)."""
    _write(
        "DELETE FROM {table} USING {async_commit} WHERE id = %s AND lock_token = %s AND state = %s RETURNING id",
        [claim.record_id, claim.lock_token, IdempotencyKey.State.LOCKED],
    )


def keys_purge_expired() -> int:
    deleted, _ = keys_expired().delete()
    return deleted


def keys_reset() -> None:
    IdempotencyKey.objects.all().delete()


def _write(sql: str, params: Sequence[Any]) -> list[tuple]:
    """Run one write as a transaction of its own (autocommit) that does not wait for the WAL flush.

    `{async_commit}` in `sql` is a one-row relation that turns synchronous_commit off for the statement's own
    transaction: one round trip, where BEGIN; SET LOCAL; ...; COMMIT would take four. Inside someone else's
    transaction (only tests call the services that way) it is a no-op: it must never make *their* commit
    asynchronous.
    """
    connection = connections[router.db_for_write(IdempotencyKey)]
    setting = "NULL" if connection.in_atomic_block else "set_config('synchronous_commit', 'off', true)"
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=TABLE, async_commit=f"(SELECT {setting}) AS async_commit"), params)
        return cursor.fetchall()


def _lease() -> timedelta:
    return timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)


def _ttl() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
