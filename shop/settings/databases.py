import dj_database_url

from shop import env

_CONN_MAX_AGE = env.get_int("DB_CONN_MAX_AGE", 60, minimum=0)
# Off by default: the check is a `SELECT 1` round trip at the start of every request. A connection that died
# (PostgreSQL restarted) fails its request instead, which is answered 503 and closes it for the next one.
_CONN_HEALTH_CHECKS = env.get_bool("DB_CONN_HEALTH_CHECKS", False)
# Server-side prepared statements (see _database): half the PostgreSQL CPU of an order (README, "The atomic
# flow"). Set 0 behind a pooler in transaction mode that cannot keep them.
_PREPARED_STATEMENTS = env.get_bool("DB_PREPARED_STATEMENTS", True)


def _database(url: str) -> dict:
    config = dj_database_url.parse(url, conn_max_age=_CONN_MAX_AGE, conn_health_checks=_CONN_HEALTH_CHECKS)
    config["ENGINE"] = "django.db.backends.postgresql"
    if _PREPARED_STATEMENTS:
        # Server-side binding is what lets psycopg prepare: a statement run more than `prepare_threshold` times on
        # a connection is parsed and planned once. Django leaves both off for the sake of poolers in transaction
        # mode (PgBouncer without max_prepared_statements); the shop talks to PostgreSQL directly.
        config.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
    return config


DATABASES = {"default": _database(env.database_url())}
# A service gets its own alias only when its own database is configured; the router decides when to use it.
for _service, _url in env.service_database_urls().items():
    DATABASES[_service] = _database(_url)

DATABASE_ROUTERS = ["shop.routers.ServiceRouter"]

# Bounded retries around the outermost atomic block on deadlock or serialization failure.
DB_CONFLICT_RETRIES = env.get_int("DB_CONFLICT_RETRIES", 5, minimum=0, maximum=50)
