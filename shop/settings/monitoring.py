from shop import env

# /health/ready: 503 when a due outbox message has waited longer than this (no relay, or one falling behind).
OUTBOX_READY_MAX_LAG_SECONDS = env.get_float("OUTBOX_READY_MAX_LAG_SECONDS", 30.0, minimum=0.1)
# /health/ready: how long to wait for a Celery worker's answer to a ping (saga mode).
HEALTH_WORKER_PING_SECONDS = env.get_float("HEALTH_WORKER_PING_SECONDS", 1.0, minimum=0.1)
