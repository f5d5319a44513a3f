"""The problems a client can meet with its Idempotency-Key, each with a stable problem type."""

from __future__ import annotations

from shop.errors import ShopError


class IdempotencyError(ShopError):
    """Refused because of the key, before anything was done: never stored, so the same key stays usable."""


class MissingIdempotencyKey(IdempotencyError):
    code = "missing_idempotency_key"
    status = 400
    title = "Idempotency-Key required"


class InvalidIdempotencyKey(IdempotencyError):
    code = "invalid_idempotency_key"
    status = 400
    title = "Invalid Idempotency-Key"


class IdempotencyKeyInUse(IdempotencyError):
    code = "idempotency_key_in_use"
    status = 409
    title = "A request with this Idempotency-Key is still being processed"
    retry_after = 1


class IdempotencyKeyReused(IdempotencyError):
    code = "idempotency_key_reused"
    status = 422
    title = "Idempotency-Key reused for a different request"
