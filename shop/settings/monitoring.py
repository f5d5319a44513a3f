from shop import env

# /health/ready: 503 when a due outbox message has waited longer than this (no relay, or one falling behind).
OUTBOX_READY_MAX_LAG_SECONDS = env.get_float("OUTBOX_READY_MAX_LAG_SECONDS", 30.0, minimum=0.1)
# /health/ready: how long to wait for a Celery worker's answer to a ping (saga mode).
HEALTH_WORKER_PING_SECONDS = env.get_float("HEALTH_WORKER_PING_SECONDS", 1.0, minimum=0.1)

# /metrics: who may scrape. A bearer token (`Authorization: Bearer <METRICS_TOKEN>`) and/or the scraper's
# addresses or networks (comma-separated, as REMOTE_ADDR shows them: scrape the web processes directly, not
# through a proxy). With neither set, /metrics is open in development and answers only loopback addresses
# with SHOP_ENV=production.
METRICS_TOKEN = env.get_str("METRICS_TOKEN")
METRICS_ALLOWED_IPS = env.get_networks("METRICS_ALLOWED_IPS")
_PRODUCTION = env.get_choice("SHOP_ENV", "development", env.PROFILES) == "production"
if not METRICS_TOKEN and not METRICS_ALLOWED_IPS and _PRODUCTION:
    METRICS_ALLOWED_IPS = env.get_networks("METRICS_ALLOWED_IPS", "127.0.0.0/8,::1")
