"""The Django project and the glue every app shares; no business logic and no process management.

`settings/` (split by concern, every value read from the environment in `env`), `urls`, `wsgi`, the Celery app
(`celery`, with `broker`'s Redis transport), the database router (`routers`), problem+json answers
(`problems`) for the typed failures of `errors`, retries around transactions (`db`), the shared Redis client
(`redis`), capped backoff for long-running processes (`backoff`), the mode-neutral type of a flow's steps
(`steps`), the token endpoints (`api`) with token expiry and login throttling (`auth`, `authentication`), the
API's JSON parser (`parsers`) and schema extensions (`schema`), the profile-dependent safeguards
(`settings/security`), log context and JSON lines (`logs`), the read-only admin base (`admin`), the landing
page (`views`) and helpers for tests (`testing`, `tests/outages`). The services are their own apps; how
processes are started is `runtime/`.
"""

from shop.celery import app as celery_app

__all__ = ["celery_app"]
