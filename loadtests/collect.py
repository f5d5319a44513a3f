"""What the comparison reads from a mode's databases, run inside that mode's environment.

    python -m loadtests.collect stats [--drain-timeout 60]   # wait until no order is PENDING, print JSON
    python -m loadtests.collect outbox [--interval 1]        # one JSON line of outbox lag per interval
    python -m loadtests.collect commands --port 8000         # the mode's process commands as JSON
    python -m loadtests.collect tokens                       # the seeded customers' API tokens, one a line
    python -m loadtests.collect window --since T0 --until T1 # what a bench window placed and finished, as JSON

The driver runs this as a subprocess with the mode's ORDER_FLOW and database URLs, because Django reads its
settings once per process and the driver visits several modes (a flow's process commands depend on its
settings too: one outbox relay per database, for instance). Saga numbers come from sagas.selectors when
that module offers them; a mode without sagas reports them as null.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    import django

    django.setup()


def _saga_selector(name: str) -> Callable[[], Any] | None:
    from django.conf import settings

    if settings.ORDER_FLOW != "saga":
        return None
    from sagas import selectors

    return getattr(selectors, name)


def order_counts() -> dict[str, Any]:
    from orders.selectors import OrderStatus, order_status_counts

    by_status = dict.fromkeys(OrderStatus.values, 0)
    failed_by_reason: dict[str, int] = {}
    for status, failure_reason, n in order_status_counts():
        by_status[status] += n
        if status == OrderStatus.FAILED:
            reason = failure_reason or "unknown"
            failed_by_reason[reason] = failed_by_reason.get(reason, 0) + n
    return {"by_status": by_status, "failed_by_reason": dict(sorted(failed_by_reason.items()))}


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    from loadtests.report import percentile

    return {"n": len(values), **{f"p{p}": percentile(values, p) for p in (50, 95, 99)},
            "max": max(values) if values else None}


def commit_spans() -> dict[str, Any]:
    """The window of inconsistency and the server-side POST-to-final (seconds) of the final orders, as
    quantiles: from the services' commit timestamps (orders.selectors.order_commit_spans)."""
    from orders.selectors import order_commit_spans

    spans = order_commit_spans()
    return {"window": _quantiles([w for _, w, _ in spans]), "final": _quantiles([f for _, _, f in spans])}


def message_counts() -> dict[str, int]:
    """Broker messages the run sent (outbox rows over every database) and the orders they served."""
    from django.conf import settings

    from orders.selectors import order_status_counts

    orders = sum(n for _, _, n in order_status_counts())
    if settings.ORDER_FLOW == "atomic":
        return {"messages": 0, "orders": orders}
    from sagas.models import OutboxMessage

    messages = sum(OutboxMessage.objects.using(alias).count() for alias in settings.DATABASES)
    return {"messages": messages, "orders": orders}


def _unfinished(counts: dict[str, Any], sagas: dict[str, int] | None) -> int:
    running = 0 if sagas is None else sagas.get("RUNNING", 0) + sagas.get("COMPENSATING", 0)
    return counts["by_status"].get("PENDING", 0) + running


def server_versions() -> dict[str, str]:
    from django.db import connection

    from shop.redis import get_redis

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {"postgresql": postgres, "redis": str(get_redis().info("server").get("redis_version", "?"))}


def cmd_stats(args: argparse.Namespace) -> int:
    _setup()
    saga_counts = _saga_selector("saga_counts")
    outbox_stats = _saga_selector("outbox_stats")
    started = time.monotonic()
    last_said = 0.0
    while True:
        counts = order_counts()
        sagas = saga_counts() if saga_counts else None
        unfinished = _unfinished(counts, sagas)
        waited = time.monotonic() - started
        if unfinished == 0 or waited >= args.drain_timeout:
            break
        if waited - last_said >= 2:
            print(f"  draining: {unfinished} order(s)/saga(s) not final after {waited:.0f}s", file=sys.stderr,
                  flush=True)
            last_said = waited
        time.sleep(0.25)
    result = {
        "spans": commit_spans(),
        "messages": message_counts(),
        "drained": unfinished == 0,
        "drain_seconds": round(time.monotonic() - started, 2),
        "orders": counts,
        "sagas": sagas,
        "outbox": outbox_stats() if outbox_stats else None,
        "versions": server_versions(),
    }
    json.dump(result, sys.stdout)
    print()
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    _setup()
    outbox_stats = _saga_selector("outbox_stats")
    if outbox_stats is None:
        return 0
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping:
        sample = {"timestamp": round(time.time(), 3), **outbox_stats()}
        print(json.dumps(sample), flush=True)
        time.sleep(args.interval)
    return 0


def cmd_commands(args: argparse.Namespace) -> int:
    _setup()
    from django.conf import settings

    from runtime.launcher import process_commands

    commands = process_commands(args.host, args.port, flow=settings.ORDER_FLOW,
                                per_service_workers=args.per_service_workers)
    if args.saga_layout and settings.ORDER_FLOW == "saga":
        # A layout other than the default, to measure it against the default (loadtests.bench --saga-layout).
        from sagas.processes import saga_process_commands

        commands = {"web": commands["web"], **saga_process_commands(sys.executable, layout=args.saga_layout)}
    json.dump(commands, sys.stdout)
    print()
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    _setup()
    from rest_framework.authtoken.models import Token

    # `manage.py seed` gives every customer a token; logging in through the API would hash a password each.
    keys = Token.objects.filter(user__username__regex=r"^customer[0-9]+$").order_by("user_id")
    for key in keys.values_list("key", flat=True):
        print(key)
    return 0


def window_counts(since: datetime, until: datetime) -> dict[str, int]:
    """Rows of the bare endpoint and orders placed in [since, until], and how far those orders got by `until`
    (a final status stamped at or before it) and by now."""
    from benchmarks.models import BenchRow
    from orders.selectors import order_window_counts

    counts = order_window_counts(since=since, until=until)
    counts["bare_rows"] = BenchRow.objects.filter(created_at__gte=since, created_at__lte=until).count()
    counts["pending_at_end"] = counts["placed"] - counts["final_by_end"]
    counts["pending_now"] = counts["placed"] - counts["final_now"]
    return counts


def cmd_window(args: argparse.Namespace) -> int:
    _setup()
    since, until = (datetime.fromtimestamp(t, UTC) for t in (args.since, args.until))
    json.dump(window_counts(since, until), sys.stdout)
    print()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.collect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="drain, then print order, saga and outbox numbers as JSON")
    stats.add_argument("--drain-timeout", type=float, default=60.0)
    stats.set_defaults(func=cmd_stats)
    outbox = sub.add_parser("outbox", help="sample the outbox lag until stopped")
    outbox.add_argument("--interval", type=float, default=1.0)
    outbox.set_defaults(func=cmd_outbox)
    commands = sub.add_parser("commands", help="print the long-running processes of ORDER_FLOW as JSON")
    commands.add_argument("--host", default="127.0.0.1")
    commands.add_argument("--port", type=int, required=True)
    commands.add_argument("--per-service-workers", action="store_true")
    commands.add_argument("--saga-layout", help="one of sagas.processes.LAYOUTS instead of the default")
    commands.set_defaults(func=cmd_commands)
    tokens = sub.add_parser("tokens", help="print the seeded customers' API tokens, one a line")
    tokens.set_defaults(func=cmd_tokens)
    window = sub.add_parser("window", help="bench rows and orders placed between two Unix times, as JSON")
    window.add_argument("--since", type=float, required=True)
    window.add_argument("--until", type=float, required=True)
    window.set_defaults(func=cmd_window)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
