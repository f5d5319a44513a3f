"""Idempotent HTTP (DESIGN.md section 5): the `@idempotent` decorator for a DRF POST, the key table and its
purge, and the `bench_idempotency` command that measures what the protocol costs."""
