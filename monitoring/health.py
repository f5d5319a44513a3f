"""/health/live and /health/ready.

Live answers as long as the process does, touching nothing: a supervisor restarts a web process that stops
answering it, never one whose database is away. Ready says whether this process can do its work now: every
database alias answers, the cache's Redis and the broker accept a connection, and in saga mode the outbox
relay keeps up (no due message waiting longer than OUTBOX_READY_MAX_LAG_SECONDS) and a Celery worker answers
a ping. A proxy or load balancer sends traffic only to ready processes; 503 comes with Retry-After.

The checks are django-health-check's (Database per alias, Cache, Celery Ping) plus two of the shop's own (the
broker, whatever its transport, and the relay's lag); its view, run here, answers 500 on failure and in many
formats, so `ReadinessView` answers JSON, 200 or 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Iterator

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from health_check.base import HealthCheck
from health_check.checks import Cache, Database
from health_check.contrib.celery import Ping
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from shop.celery import app as celery_app
from shop.errors import DependencyUnavailable


@never_cache
def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@dataclasses.dataclass
class Broker(HealthCheck):
    """The Celery broker (Redis or RabbitMQ) accepts a connection."""

    timeout = datetime.timedelta(seconds=3)

    def run(self) -> None:
        from shop.celery import app

        try:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            raise ServiceUnavailable(f"broker unreachable: {type(exc).__name__}") from exc


@dataclasses.dataclass
class OutboxLag(HealthCheck):
    """The relay of database `alias` keeps up: no due message has waited longer than `max_seconds`."""

    alias: str = "default"
    max_seconds: float = 30.0

    def run(self) -> None:
        from sagas.selectors import outbox_due_waiting

        try:
            # A connection of this check's own thread, closed afterwards (as django-health-check's Database).
            with connections[self.alias].temporary_connection():
                waiting, age = outbox_due_waiting(using=self.alias)
        except Exception as exc:
            raise ServiceUnavailable(f"outbox unreadable: {type(exc).__name__}") from exc
        if waiting and age > self.max_seconds:
            raise ServiceUnavailable(f"{waiting} outbox messages waiting, the oldest due {age:.1f} s ago "
                                     f"(bound {self.max_seconds:g} s): is a relay running?")


def _checks() -> Iterator[HealthCheck]:
    for alias in settings.DATABASES:
        yield Database(alias=alias)
    yield Cache(alias="default")
    yield Broker()
    if settings.ORDER_FLOW == "saga":
        from sagas.processes import relay_aliases

        for alias in relay_aliases():
            yield OutboxLag(alias=alias, max_seconds=settings.OUTBOX_READY_MAX_LAG_SECONDS)
        yield WorkerPing(app=celery_app, timeout=datetime.timedelta(seconds=settings.HEALTH_WORKER_PING_SECONDS),
                         limit=1)


@dataclasses.dataclass
class WorkerPing(Ping):
    """A Celery worker answers a ping (limit=1: the first answer is enough, no waiting out the timeout).

    Which queues have a consumer is the workers' supervisor's business: Ping's own check would want one
    worker on the default queue, while the shop's layout spreads the queues over several."""

    def check_active_queues(self, *active_workers: str) -> None:
        return None


class ReadinessView(HealthCheckView):
    def get_checks(self) -> Iterator[HealthCheck]:
        return _checks()

    async def get(self, request: HttpRequest, *args: object, **kwargs: object) -> JsonResponse:
        with self.get_executor() as executor:
            results = await asyncio.gather(*(check.get_result(executor) for check in self.get_checks()))
        checks = {_name(result.check): "ok" if result.error is None else str(result.error) for result in results}
        ready = all(result.error is None for result in results)
        response = JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                                status=200 if ready else 503)
        if not ready:
            response["Retry-After"] = str(DependencyUnavailable.retry_after)
        return response


def _name(check: HealthCheck) -> str:
    alias = getattr(check, "alias", None)
    name = {"Database": "database", "Cache": "cache", "Broker": "broker", "OutboxLag": "outbox_lag",
            "WorkerPing": "worker"}.get(type(check).__name__, type(check).__name__)
    return f"{name}:{alias}" if alias else name
