"""Benchmark of the saga mode: completed sagas per second, POST-to-final latency, and relay drain rate.

    make bench-saga                                   # or:
    .venv/bin/python -m runtime.launcher exec -- .venv/bin/python -m loadtests.saga_bench --orders 300 --concurrency 8

It runs on a database of its own (`<name>_bench`, created afresh) and a Redis database of its own, starts a
Celery worker on every queue, one outbox relay and the sweeper, and measures three things:

1. light load: orders placed one after another; the time from placing each order to its final status
   (the order's `finalized_at`, written by the worker, minus the wall clock at placement);
2. throughput: `--concurrency` clients placing `--orders` orders; completed sagas per second;
3. the relay: a backlog of `--backlog` outbox rows drained by the relay's own code, against the same Celery
   app publishing the same messages with no database in between.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_QUEUE = "bench"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def outer(args: argparse.Namespace) -> int:
    """Prepare the bench database, start the saga processes, run the measurements in a child process."""
    import dj_database_url

    from runtime.pgadmin import create_database

    base = os.environ["DATABASE_URL"]
    database_url = create_database(base, f"{dj_database_url.parse(base)['NAME']}_bench", fresh=True)
    redis_url = urlsplit(os.environ["REDIS_URL"])._replace(path="/2").geturl()
    env = {**os.environ, "ORDER_FLOW": "saga", "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    for variable in ("ORDERS", "PAYMENTS", "INVENTORY", "SHIPPING"):
        env.pop(f"{variable}_DATABASE_URL", None)

    def manage(*argv: str) -> None:
        subprocess.run([PYTHON, "manage.py", *argv], cwd=REPO_ROOT, env=env, check=True)

    print(f"bench database {urlsplit(database_url).path[1:]}, broker {redis_url}", flush=True)
    manage("migrate", "--noinput", "-v", "0")
    manage("seed", "--customers", "20", "--products", "50", "--stock", "1000000", "--balance-cents", str(10**13))
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    from sagas.processes import QUEUES, relay_command, sweeper_command, worker_command

    # One database here, so one relay.
    processes = {
        "worker": worker_command(PYTHON, QUEUES, "bench", args.worker_concurrency),
        "relay": relay_command(PYTHON),
        "sweeper": sweeper_command(PYTHON),
    }
    children = {name: subprocess.Popen(argv, cwd=REPO_ROOT, env=env, start_new_session=True)
                for name, argv in processes.items()}
    try:
        time.sleep(3)  # let the worker connect before the clock starts
        # The drain measurement stops the running relay first, so the two do not share the backlog.
        env["BENCH_RELAY_PID"] = str(children["relay"].pid)
        return subprocess.run([PYTHON, "-m", "loadtests.saga_bench", "--inner", *sys.argv[1:]], cwd=REPO_ROOT,
                              env=env).returncode
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()


def inner(args: argparse.Namespace) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections

    from operations.demo import product_sku
    from orders.flows import place_order
    from orders.selectors import OrderStatus, order_outcome_list, orders_pending_exist
    from orders.services import PlaceOrder
    from shop.testing import ADDRESS

    assert settings.ORDER_FLOW == "saga"
    customers = list(get_user_model().objects.filter(username__startswith="customer").values_list("pk", flat=True))

    def place(n: int) -> tuple[int, float]:
        command = PlaceOrder(customer_id=customers[n % len(customers)], lines=[(product_sku(n % 50 + 1), 1)],
                             payment_token="tok_ok", shipping_address=ADDRESS)
        started = time.time()
        return place_order(command).pk, started

    def wait_final(ids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while orders_pending_exist(order_ids=ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"orders still pending after {timeout} s")
            time.sleep(0.02)  # latency comes from finalized_at, so polling slowly costs no accuracy

    def latencies(started: dict[int, float]) -> list[float]:
        final = order_outcome_list(order_ids=started)
        assert all(status == OrderStatus.CONFIRMED for _, status, _ in final)
        return [(at.timestamp() - started[pk]) * 1000 for pk, _, at in final]

    # 1. Light load: one order at a time.
    for n in range(5):  # warm-up: connections, imports, worker processes
        pk, _ = place(n)
        wait_final([pk], 30)
    light: dict[int, float] = {}
    for n in range(args.light):
        pk, started = place(n)
        light[pk] = started
        wait_final([pk], 30)
    light_ms = latencies(light)

    # 2. Throughput: several clients at once.
    started_at: dict[int, float] = {}
    lock = threading.Lock()
    counter = iter(range(args.orders))

    def client() -> None:
        try:
            for n in counter:
                pk, started = place(n)
                with lock:
                    started_at[pk] = started
        finally:
            connections.close_all()

    began = time.time()
    threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_final(list(started_at), 300)
    last = max(at.timestamp() for _, _, at in order_outcome_list(order_ids=started_at))
    loaded_ms = latencies(started_at)
    rate = len(started_at) / (last - began)

    # 3. The relay against a bare publish of the same messages.
    relay_rate, bare_rate = relay_drain(args.backlog)

    print()
    print(f"saga benchmark: {args.light} orders one at a time, then {args.orders} orders from {args.concurrency} "
          f"clients; worker concurrency {args.worker_concurrency}")
    print(f"  light load POST-to-CONFIRMED   p50 {percentile(light_ms, 50):7.1f} ms   "
          f"p95 {percentile(light_ms, 95):7.1f} ms   p99 {percentile(light_ms, 99):7.1f} ms   "
          f"(mean {statistics.fmean(light_ms):.1f})")
    print(f"  under load POST-to-CONFIRMED   p50 {percentile(loaded_ms, 50):7.1f} ms   "
          f"p95 {percentile(loaded_ms, 95):7.1f} ms   p99 {percentile(loaded_ms, 99):7.1f} ms")
    print(f"  completed sagas per second     {rate:7.1f}")
    print(f"  relay drain ({args.backlog} rows)       {relay_rate:7.0f} msg/s")
    print(f"  bare Celery publish            {bare_rate:7.0f} msg/s")
    print(f"  relay / bare publish           {relay_rate / bare_rate:7.2f}")
    return 0


def relay_drain(backlog: int) -> tuple[float, float]:
    import signal
    import uuid

    from django.utils import timezone

    from sagas.models import OutboxMessage
    from sagas.outbox import Relay
    from shop.celery import app
    from shop.redis import get_redis

    relay_pid = int(os.environ["BENCH_RELAY_PID"])
    os.kill(relay_pid, signal.SIGTERM)
    while os.path.exists(f"/proc/{relay_pid}") and "zombie" not in Path(f"/proc/{relay_pid}/status").read_text():
        time.sleep(0.05)
    payload = {"saga_id": str(uuid.uuid4()), "step": 1, "data": {"order_id": 1, "lines": [["SKU-0001", 1]]}}
    OutboxMessage.objects.bulk_create(
        [OutboxMessage(message_id=uuid.uuid4(), queue=BENCH_QUEUE, task="bench.noop", payload=payload,
                       available_at=timezone.now()) for _ in range(backlog)], batch_size=5000,
    )
    relay = Relay(using="default")
    started = time.perf_counter()
    while relay.drain():
        pass
    relay_seconds = time.perf_counter() - started
    relay_rate = relay.published / relay_seconds

    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(backlog):
            app.send_task("bench.noop", args=[payload], queue=BENCH_QUEUE, task_id=str(uuid.uuid4()),
                          producer=producer)
    bare_rate = backlog / (time.perf_counter() - started)
    get_redis().delete(BENCH_QUEUE)
    return relay_rate, bare_rate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.saga_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--light", type=int, default=50, help="orders placed one at a time")
    parser.add_argument("--orders", type=int, default=300, help="orders placed by concurrent clients")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--worker-concurrency", type=int, default=4)
    parser.add_argument("--backlog", type=int, default=5000, help="outbox rows for the relay drain")
    args = parser.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
