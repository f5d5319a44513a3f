from shop import env

# Idempotency-Key handling on POSTs that create or change something (idempotency/, DESIGN.md section 5).
# Required by default: a client that cannot retry safely should find out on its first request, not its first retry.
IDEMPOTENCY_KEY_REQUIRED = env.get_bool("IDEMPOTENCY_KEY_REQUIRED", True)
# How long a key and its stored response are kept; `manage.py purge_idempotency_keys` removes older ones.
IDEMPOTENCY_TTL_HOURS = env.get_int("IDEMPOTENCY_TTL_HOURS", 24, minimum=1, maximum=24 * 365)
# How long a request may hold its key before a retry may take it over: longer than any request runs, short
# enough that a process that died mid-request does not block the client for long.
IDEMPOTENCY_LOCK_SECONDS = env.get_int("IDEMPOTENCY_LOCK_SECONDS", 30, minimum=1, maximum=3600)
