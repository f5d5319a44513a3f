"""/metrics in Prometheus text format.

Two kinds of figures:

- **Per request**, counted by the web process that answered (`RequestMetricsMiddleware`): one histogram by
  view, method and status (its `_count` is the request count), and the idempotency replays (answers that
  carry `Idempotent-Replayed: true`). Under gunicorn every worker is its own process: prometheus_client's
  multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set up by runtime/gunicorn_config.py) adds them up at scrape time.
  The middleware costs one dictionary lookup and one histogram observation per request (a few microseconds;
  README, "Operations").
- **The shop's state**, computed from the databases at scrape time by `ShopCollector`, so they hold across
  any number of processes and hosts: orders by status and flow, the saga backlog, step durations, outbox
  pending rows and the age of the oldest, dead letters. Two counts are events of other processes (relays and
  Celery workers, possibly on other hosts) that no table keeps: messages published by the relays and duplicate
  deliveries met by consumers; those processes add them to counters in Redis (`count`), read here.

Who may scrape: METRICS_TOKEN (a bearer token) and/or METRICS_ALLOWED_IPS (addresses or networks of the
scraper, as seen by the web process); with neither set, anyone (development).
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterator

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

REQUEST_SECONDS = Histogram("shop_http_request_duration_seconds", "HTTP requests by view, method and status",
                            ["view", "method", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
IDEMPOTENCY_REPLAYS = Counter("shop_idempotency_replays_total", "Requests answered with a stored response")

# Seconds from a command's publish to its reply (the step log's duration), in these buckets.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REDIS_PREFIX = "shop:metrics:"


class RequestMetricsMiddleware:
    """Times every request and counts idempotency replays: kept to one observation per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        REQUEST_SECONDS.labels(match.view_name if match else "unmatched", request.method,
                               response.status_code).observe(time.perf_counter() - started)
        if response.has_header("Idempotent-Replayed"):
            IDEMPOTENCY_REPLAYS.inc()
        return response


def count(name: str, amount: int = 1, **labels: str) -> None:
    """Add `amount` to the shop-wide counter `name` (Redis), for processes that serve no /metrics of their own.

    Best effort: a count lost while Redis is away costs a figure, never the work being counted (nor more than
    a second of its time)."""
    key = REDIS_PREFIX + name + "".join(f":{k}={v}" for k, v in sorted(labels.items()))
    try:
        _counters().incrby(key, amount)
    except Exception as exc:  # a metric must never fail what it counts
        logger.debug("metric %s not counted: %s", key, exc)


@functools.cache
def _counters() -> redis.Redis:
    # The cache's Redis, with timeouts short enough that an unreachable one cannot hold up a relay or a worker.
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


class ShopCollector:
    """The shop's gauges and counters, read from every database (and Redis) when /metrics is scraped."""

    def collect(self) -> Iterator[Metric]:
        from orders.selectors import order_flow_status_counts
        from sagas.processes import relay_aliases
        from sagas.selectors import dead_letter_count, outbox_pending_and_age, saga_backlog_count

        orders = GaugeMetricFamily("shop_orders", "Orders by status and the flow that placed them",
                                   labels=["status", "flow"])
        for flow, status, number in order_flow_status_counts():
            orders.add_metric([status, flow], number)
        yield orders
        yield GaugeMetricFamily("shop_saga_backlog", "Sagas accepted and not final (running or compensating)",
                                value=saga_backlog_count())
        yield self._step_durations()
        pending = GaugeMetricFamily("shop_outbox_pending", "Outbox messages not published yet", labels=["database"])
        oldest = GaugeMetricFamily("shop_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest unpublished outbox message", labels=["database"])
        dead = GaugeMetricFamily("shop_dead_letters", "Messages no delivery could handle, not re-driven",
                                 labels=["database"])
        for alias in relay_aliases():
            waiting, age = outbox_pending_and_age(using=alias)
            pending.add_metric([alias], waiting)
            oldest.add_metric([alias], age)
            dead.add_metric([alias], dead_letter_count(using=alias))
        yield pending
        yield oldest
        yield dead
        yield from self._redis_counters()

    @staticmethod
    def _step_durations() -> Metric:
        from sagas.selectors import step_duration_histogram

        family = HistogramMetricFamily("shop_saga_step_duration_seconds",
                                       "Time from a saga command's publish to its reply, by step and direction",
                                       labels=["step", "direction"])
        for step, direction, within, total, seconds in step_duration_histogram(bounds=STEP_BUCKETS):
            buckets = [(str(bound), n) for bound, n in zip(STEP_BUCKETS, within, strict=True)]
            family.add_metric([step, direction], [*buckets, ("+Inf", total)], seconds)
        return family

    @staticmethod
    def _redis_counters() -> Iterator[Metric]:
        families = {
            "relay_published": CounterMetricFamily("shop_relay_published", "Messages published by the outbox relays",
                                                   labels=["database"]),
            "inbox_duplicates": CounterMetricFamily("shop_inbox_duplicates",
                                                    "Deliveries a consumer had already handled (its inbox knew them)",
                                                    labels=["consumer"]),
        }
        try:
            client = _counters()
            keys = sorted(client.scan_iter(match=REDIS_PREFIX + "*", count=1000))
            values = client.mget(keys) if keys else []
        except Exception as exc:
            logger.warning("metrics: Redis counters unreadable: %s", exc)
            keys, values = [], []
        for key, value in zip(keys, values, strict=True):
            name, *labels = key.decode()[len(REDIS_PREFIX):].split(":")
            family = families.get(name)
            if family is not None and value is not None:
                family.add_metric([label.split("=", 1)[1] for label in labels], int(value))
        yield from families.values()


class _ThisProcess:
    """What the metrics above hold in this process (no multiprocess mode: `manage.py runserver`, tests)."""

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def _registry() -> CollectorRegistry:
    """A registry for one scrape: the request metrics of every web process (or of this one) and the shop's."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())  # type: ignore[arg-type]
    registry.register(ShopCollector())  # type: ignore[arg-type]
    return registry


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return HttpResponse("metrics are not public: send METRICS_TOKEN as a bearer token, or scrape from an "
                            "address in METRICS_ALLOWED_IPS\n", status=403, content_type="text/plain")
    response = HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


def _allowed(request: HttpRequest) -> bool:
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS
    if not token and not networks:
        return True
    if token:
        sent = request.headers.get("Authorization", "")
        if sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].strip().encode(), token.encode()):
            return True
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in network for network in networks)
    return False
