"""What an order costs: each mode against a bare one-INSERT endpoint, on the same server, back to back.

    python -m loadtests.bench                          # bare, atomic, saga: 16 clients x 20 s each
    python -m loadtests.bench --modes bare,atomic --duration 10 --connections 8

For each mode in turn, on one fresh database (migrated and seeded once) and an empty Redis database index:
start gunicorn (WEB_CONCURRENCY workers, the same for every mode) and the mode's processes (saga: Celery
workers, outbox relay(s), sweeper, as `make run` starts them), warm up, let the warm-up's sagas finish, then
drive a fixed number of concurrent clients for a fixed time with wrk (or, without wrk, a Python client of
threads), and measure:

- throughput: 2xx answers per second of the bare endpoint; orders placed per second (atomic: confirmed;
  saga: accepted), and saga orders *completed during the window* (placed in it and final before it ended),
  read from the database afterwards;
- CPU ms per order: utime + stime from /proc of every process the mode runs and all their children (reaped
  ones through cutime/cstime), the whole PostgreSQL server (postmaster and every backend) and Redis (its own
  INFO cpu), from the start of the window until every order placed in it is final;
- SQL statements per order: every statement the mode's processes send through Django (benchmarks.sqlcount,
  installed by SHOP_BENCH_SQL_COUNT_DIR), and, when the server preloads pg_stat_statements, what the server
  ran (BEGIN/COMMIT and foreign key checks included); server transactions per order (pg_stat_database);
  broker messages per order (Redis LPUSH + RPUSH); the load generator's own CPU.

The headline is each rate divided by the bare endpoint's, measured minutes apart on the same machine;
absolute numbers depend on the machine. Two verdicts follow (atomic/bare and saga completed/atomic against
their floors) and the exit status is 1 when one falls short. The table is printed and written to
reports/bench-<timestamp>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.report import CostTable, markdown_table
from runtime import pgadmin
from runtime.launcher import REPO_ROOT

PYTHON = sys.executable
HOST = "127.0.0.1"
MODES = ("bare", "atomic", "saga", "choreography")
# The modes that answer 202 and finish orders in the background (Celery workers, relays, a sweeper).
BACKGROUND_MODES = ("saga", "choreography")
LUA_SCRIPT = REPO_ROOT / "loadtests" / "bench.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A PostgreSQL (15+) backend that goes idle less than a second after its last statistics flush holds its
# counts back for up to 10 s; the window starts after that, so the warm-up's transactions stay out of it.
# (At the end the mode's processes are stopped first: an exiting backend flushes at once.)
STATS_SETTLE_SECONDS = 10.5
# Tags the driver's own queries, so pg_stat_statements totals can leave them out.
DRIVER_TAG = "/* make-bench driver */"
# (verdict label, numerator, denominator, floor): the floors of issue "cost per order".
VERDICTS = (
    ("atomic/bare", "atomic_rate", "bare_rate", 0.3),
    ("saga completed during load / atomic", "saga_completed_rate", "atomic_rate", 0.4),
)


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class BenchError(Exception):
    pass


# -- CPU from /proc -----------------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU ticks of the process and of its reaped children) for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # The command name is in parentheses and may hold spaces or parentheses itself: split after the last.
        fields = raw[raw.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
        ppid = int(fields[1])
        ticks = sum(int(value) for value in fields[11:15])
        table[int(entry.name)] = (ppid, ticks)
    return table


def tree_ticks(root: int, table: dict[int, tuple[int, int]]) -> int:
    """CPU ticks of `root` and every descendant alive now, each with what its exited children used.

    A child that exited and was reaped between two readings moves from being counted itself to being counted
    in its parent's cutime/cstime, so a difference of two readings counts it once (PostgreSQL backends come
    and go all the time)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            total += table[pid][1]
            stack.extend(children.get(pid, ()))
    return total


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


# -- the servers --------------------------------------------------------------------------------------------


class Servers:
    """Readings from the PostgreSQL server and the Redis server the modes run on."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        import dj_database_url
        import psycopg
        import redis

        config = dj_database_url.parse(database_url)
        self.database = config["NAME"]
        self.pg = psycopg.connect(host=config["HOST"] or None, port=config["PORT"] or None,
                                  user=config["USER"] or None, password=config["PASSWORD"] or None,
                                  dbname=self.database, autocommit=True)
        self.redis = redis.Redis.from_url(redis_url)
        self.postmaster = self._postmaster()
        preload = self._one("SHOW shared_preload_libraries")
        self.statements_source = "django"
        if "pg_stat_statements" in str(preload):
            self.pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.statements_source = "pg_stat_statements"

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.pg.execute(f"{DRIVER_TAG} {sql}", params).fetchone()
        return row[0] if row else None

    def _postmaster(self) -> int | None:
        """The server's main process, when it runs on this machine (the parent of our own backend)."""
        backend = self._one("SELECT pg_backend_pid()")
        table = process_table()
        if backend not in table:
            return None
        parent = table[backend][0]

        def is_postgres(pid: int) -> bool:
            # A server on another machine has pids that mean nothing here.
            with contextlib.suppress(OSError):
                return "postgres" in Path(f"/proc/{pid}/cmdline").read_text()
            return False

        return parent if is_postgres(backend) and is_postgres(parent) else None

    def version(self) -> tuple[str, str]:
        return (str(self._one("SHOW server_version")),
                str(self.redis.info("server").get("redis_version", "?")))

    def pending_orders(self) -> int:
        return int(self._one("SELECT count(*) FROM orders_order WHERE status = 'PENDING'"))

    def wait_sessions_gone(self, timeout: float = 10.0) -> None:
        """Until no other session is connected to the database: an exiting backend flushes its statistics."""
        deadline = time.monotonic() + timeout
        while self._one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)

    def transactions(self) -> int:
        return int(self._one("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                             [self.database]))

    def server_statements(self) -> int:
        return int(self._one(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query NOT LIKE %s", [f"%{DRIVER_TAG}%"]))

    def redis_cpu_seconds(self) -> float:
        info = self.redis.info("cpu")
        return sum(float(info.get(key, 0)) for key in ("used_cpu_user", "used_cpu_sys", "used_cpu_user_children",
                                                        "used_cpu_sys_children"))

    def broker_pushes(self) -> int:
        stats = self.redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0)) for command in ("lpush", "rpush"))

    def close(self) -> None:
        self.pg.close()
        self.redis.close()


# -- one reading of everything --------------------------------------------------------------------------------


def process_group(name: str) -> str:
    if name == "web":
        return "web (gunicorn)"
    if name.startswith("worker"):
        return "Celery workers"
    if name.startswith("relay"):
        return "outbox relay(s)"
    return name


@dataclass
class Reading:
    at: float
    cpu: dict[str, float]  # seconds by group
    machine: tuple[int, int]
    statements: int | None = None
    server_statements: int | None = None
    transactions: int | None = None
    pushes: int | None = None


def read_cpu(children: dict[str, int], servers: Servers) -> Reading:
    table = process_table()
    cpu: dict[str, float] = {}
    for name, pid in children.items():
        group = process_group(name)
        cpu[group] = cpu.get(group, 0.0) + tree_ticks(pid, table) / CLOCK_TICKS
    if servers.postmaster is not None:
        cpu["PostgreSQL"] = tree_ticks(servers.postmaster, table) / CLOCK_TICKS
    cpu["Redis"] = servers.redis_cpu_seconds()
    return Reading(at=time.time(), cpu=cpu, machine=machine_ticks())


def read_counters(reading: Reading, servers: Servers, sql_dir: Path) -> Reading:
    from benchmarks.sqlcount import total

    reading.statements = total(sql_dir)
    if servers.statements_source == "pg_stat_statements":
        reading.server_statements = servers.server_statements()
    reading.transactions = servers.transactions()
    reading.pushes = servers.broker_pushes()
    return reading


# -- load -------------------------------------------------------------------------------------------------


@dataclass
class Load:
    tool: str
    requests: int
    non2xx: int  # answers >= 400, the 503s included
    overloaded: int  # 503: refused by backpressure or a dependency away
    socket_errors: int
    seconds: float
    cpu_seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None


def _run_measured(command: list[str], timeout: float) -> tuple[str, float, int]:
    """Run `command`; its stdout, the CPU seconds it used (children included) and its exit code."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            # wait4 reaps the child and returns its own resource usage, children included.
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return out.read().decode(errors="replace"), usage.ru_utime + usage.ru_stime, process.returncode


def drive(tool: str, base_url: str, kind: str, *, connections: int, seconds: float, tokens: Path,
          products: int, prefix: str) -> Load:
    """`connections` clients POSTing for `seconds`, each waiting for its answer before the next request."""
    if tool == "wrk":
        threads = max(1, min(connections, os.cpu_count() or 1))
        # wrk counts whole seconds.
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                   "--timeout", "30s",
                   "-s", str(LUA_SCRIPT), base_url, "--", kind, str(tokens), str(products), prefix]
    else:
        command = [PYTHON, "-m", "loadtests.bench", "client", "--url", base_url, "--kind", kind,
                   "--connections", str(connections), "--seconds", str(seconds), "--tokens", str(tokens),
                   "--products", str(products), "--prefix", prefix]
    output, cpu, code = _run_measured(command, timeout=seconds + 60)
    summary = next((json.loads(line) for line in reversed(output.splitlines()) if line.startswith("{")), None)
    if code != 0 or summary is None:
        raise BenchError(f"the load generator ({tool}) exited with {code}: {output[-1500:]}")
    return Load(tool=tool, requests=summary["requests"], non2xx=summary["non2xx"],
                overloaded=summary["overloaded"], socket_errors=summary["socket_errors"],
                seconds=summary["duration_us"] / 1e6, cpu_seconds=cpu,
                p50_ms=summary.get("p50_ms"), p99_ms=summary.get("p99_ms"))


def order_body(sku: str) -> bytes:
    return json.dumps({"lines": [{"sku": sku, "quantity": 1}], "payment": {"token": "tok_ok"},
                       "shipping_address": {"name": "Bench", "line1": "1 Main St", "city": "London",
                                            "postal_code": "N1", "country": "GB"}}).encode()


def cmd_client(args: argparse.Namespace) -> int:
    """The load generator when wrk is not installed: threads of blocking http.client connections."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(args.url)
    tokens = [] if args.kind == "bare" else [t for t in Path(args.tokens).read_text().split() if t]
    lock = threading.Lock()
    totals = {"requests": 0, "non2xx": 0, "overloaded": 0, "socket_errors": 0}
    latencies: list[float] = []
    started = time.monotonic()
    deadline = started + args.seconds

    def client(thread: int) -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        done = non2xx = overloaded = errors = 0
        mine: list[float] = []
        counter = 0
        while time.monotonic() < deadline:
            counter += 1
            if args.kind == "bare":
                path, body = "/api/bench/insert", b'{"note": "bench"}'
                headers = {"Content-Type": "application/json"}
            else:
                n = counter * 7 + thread
                path, body = "/api/v1/orders", order_body(f"SKU-{n % args.products + 1:04d}")
                headers = {"Content-Type": "application/json", "Authorization": f"Token {tokens[n % len(tokens)]}",
                           "Idempotency-Key": f"{args.prefix}-{thread}-{counter}"}
            sent = time.perf_counter()
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                continue
            mine.append((time.perf_counter() - sent) * 1000)
            done += 1
            non2xx += response.status >= 400
            overloaded += response.status == 503
        connection.close()
        with lock:
            totals["requests"] += done
            totals["non2xx"] += non2xx
            totals["overloaded"] += overloaded
            totals["socket_errors"] += errors
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i + 1,)) for i in range(args.connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()

    def pick(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else None

    print(json.dumps({**totals, "duration_us": int((time.monotonic() - started) * 1e6), "p50_ms": pick(50),
                      "p99_ms": pick(99)}))
    return 0


# -- one mode -----------------------------------------------------------------------------------------------


@dataclass
class ModeRun:
    mode: str
    processes: list[str]
    load: Load
    counts: dict[str, int]
    window_seconds: float
    drain_seconds: float
    drained: bool
    cpu: dict[str, float]  # seconds from the window's start until the window's orders were final
    machine_busy_share: float  # of every core, during the window
    statements: int
    server_statements: int | None
    transactions: int
    pushes: int

    @property
    def units(self) -> int:
        """What the mode's costs are divided by: rows of the bare endpoint, or orders placed."""
        return self.counts["bare_rows"] if self.mode == "bare" else self.counts["placed"]

    @property
    def rate(self) -> float:
        return self.units / self.window_seconds if self.window_seconds else 0.0

    @property
    def completed_rate(self) -> float:
        return self.counts["final_by_end"] / self.window_seconds if self.window_seconds else 0.0


def mode_env(mode: str, database_url: str, redis_url: str, sql_dir: Path, web_workers: int) -> dict[str, str]:
    env = {**os.environ, "ORDER_FLOW": mode if mode in BACKGROUND_MODES else "atomic", "DATABASE_URL": database_url,
           "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", "BENCH_ENDPOINT": "1",
           "WEB_CONCURRENCY": str(web_workers), "SHOP_BENCH_SQL_COUNT_DIR": str(sql_dir)}
    # One database and one broker for every process of the mode, whatever the caller's environment says.
    env.pop("CELERY_BROKER_URL", None)
    for service in ("ORDERS", "PAYMENTS", "INVENTORY", "SHIPPING"):
        env.pop(f"{service}_DATABASE_URL", None)
    return env


def wait_drained(servers: Servers, timeout: float) -> tuple[bool, float]:
    started = time.monotonic()
    while servers.pending_orders():
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started
        time.sleep(0.25)
    return True, time.monotonic() - started


def run_mode(mode: str, args: argparse.Namespace, database_url: str, redis_url: str, tokens: Path,
             log_dir: Path, run_id: str) -> ModeRun:
    from loadtests.compare import Processes, free_port, run_checked, wait_until_ready

    sql_dir = Path(tempfile.mkdtemp(prefix=f"bench-sql-{mode}-"))
    env = mode_env(mode, database_url, redis_url, sql_dir, args.web_workers)
    port = free_port()
    base_url = f"http://{HOST}:{port}"
    listed = run_checked([PYTHON, "-m", "loadtests.collect", "commands", "--host", HOST, "--port", str(port),
                          *(["--saga-layout", args.saga_layout] if args.saga_layout else [])],
                         env, "listing the processes", capture_output=True)
    commands: dict[str, list[str]] = json.loads(listed.stdout.strip().splitlines()[-1])
    processes = Processes(commands, env, log_dir / mode)
    kind = "bare" if mode == "bare" else "orders"
    servers = Servers(database_url, redis_url)
    say(f"{mode}: starting {', '.join(commands)} ({args.web_workers} gunicorn workers) on {base_url}")
    processes.start()
    try:
        wait_until_ready(base_url, processes)
        children = {name: child.pid for name, child in processes.children.items()}

        def load(phase: str, seconds: float) -> Load:
            result = drive(args.tool, base_url, kind, connections=args.connections, seconds=seconds,
                           tokens=tokens, products=args.products, prefix=f"{run_id}-{mode}-{phase}")
            exited = processes.exited()
            if exited:
                raise BenchError(f"{', '.join(exited)} during the load; see {processes.log_dir}")
            return result

        say(f"{mode}: warm-up {args.warmup:g}s")
        load("warmup", args.warmup)
        drained, _ = wait_drained(servers, args.drain_timeout)
        if not drained:
            raise BenchError(f"{mode}: the warm-up's orders are not final after {args.drain_timeout:g}s")
        time.sleep(STATS_SETTLE_SECONDS)
        before = read_counters(read_cpu(children, servers), servers, sql_dir)
        say(f"{mode}: {args.connections} clients for {args.duration:g}s")
        window = load("window", args.duration)
        end = read_cpu(children, servers)
        drained, drain_seconds = wait_drained(servers, args.drain_timeout)
        final = read_cpu(children, servers)
        if mode in BACKGROUND_MODES:
            say(f"{mode}: load done; every order final {drain_seconds:.1f}s later" if drained else
                f"{mode}: orders still PENDING {args.drain_timeout:g}s after the load")
        processes.stop()
        servers.wait_sessions_gone()
        after = read_counters(Reading(at=time.time(), cpu={}, machine=(0, 0)), servers, sql_dir)
        counted = run_checked([PYTHON, "-m", "loadtests.collect", "window", "--since", str(before.at),
                               "--until", str(end.at)], env, "counting the window", capture_output=True)
        counts = json.loads(counted.stdout.strip().splitlines()[-1])
    finally:
        processes.stop()
        servers.close()
        shutil.rmtree(sql_dir, ignore_errors=True)
    busy = (end.machine[0] - before.machine[0]) / max(1, end.machine[1] - before.machine[1])
    assert before.statements is not None and after.statements is not None
    return ModeRun(
        mode=mode, processes=list(commands), load=window, counts=counts, window_seconds=end.at - before.at,
        drain_seconds=drain_seconds, drained=drained,
        cpu={group: final.cpu[group] - before.cpu.get(group, 0.0) for group in final.cpu},
        machine_busy_share=busy, statements=after.statements - before.statements,
        server_statements=None if after.server_statements is None or before.server_statements is None
        else after.server_statements - before.server_statements,
        transactions=(after.transactions or 0) - (before.transactions or 0),
        pushes=(after.pushes or 0) - (before.pushes or 0),
    )


# -- the table ----------------------------------------------------------------------------------------------

CPU_GROUPS = ("web (gunicorn)", "Celery workers", "outbox relay(s)", "sweeper", "PostgreSQL", "Redis")


@dataclass
class BenchResult:
    runs: list[ModeRun]
    settings: dict[str, Any]
    statements_source: str
    started_at: str

    def run(self, mode: str) -> ModeRun | None:
        return next((r for r in self.runs if r.mode == mode), None)

    def figures(self) -> dict[str, float | None]:
        bare, atomic, saga = self.run("bare"), self.run("atomic"), self.run("saga")
        return {"bare_rate": bare.rate if bare else None, "atomic_rate": atomic.rate if atomic else None,
                "saga_completed_rate": saga.completed_rate if saga else None}

    def verdicts(self) -> list[tuple[str, bool | None, str]]:
        """(label, holds (None: not measured), line) for each floor."""
        figures = self.figures()
        lines = []
        for label, top, bottom, floor in VERDICTS:
            a, b = figures[top], figures[bottom]
            name = f"{label} >= {floor:g}"
            if a is None or b is None:
                lines.append((label, None, f"{name}: not measured (a mode was left out)"))
            elif not b:
                lines.append((label, False, f"{name}: falls short: the baseline answered nothing"))
            elif a / b >= floor:
                lines.append((label, True, f"{name}: holds ({a / b:.2f}: {a:.1f}/s against {b:.1f}/s)"))
            else:
                lines.append((label, False, f"{name}: falls short: {a / b:.2f} ({a:.1f}/s against {b:.1f}/s)"))
        return lines

    @property
    def ok(self) -> bool:
        return all(holds is not False for _, holds, _ in self.verdicts())


def _per(value: float, units: int, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return fmt.format(value * scale / units) if units else "n/a"


def cost_table(result: BenchResult) -> CostTable:
    runs = result.runs
    bare = result.run("bare")
    header = ["", *(r.mode for r in runs)]

    def row(label: str, cell: Callable[[ModeRun], str]) -> list[str]:
        return [label, *(cell(r) for r in runs)]

    def ratio(value: float) -> str:
        return f"{value / bare.rate:.2f}" if bare and bare.rate else "n/a"

    saga_only: Callable[[Callable[[ModeRun], str]], Callable[[ModeRun], str]] = \
        lambda cell: lambda r: cell(r) if r.mode in BACKGROUND_MODES else "—"  # noqa: E731
    rows = [
        row("throughput ÷ bare req/s (headline)", lambda r: ratio(r.rate)),
        row("saga completed during load ÷ bare req/s", saga_only(lambda r: ratio(r.completed_rate))),
        row("req/s (bare) or orders placed/s (machine-dependent)", lambda r: f"{r.rate:.1f}"),
        row("saga orders completed during load/s (machine-dependent)",
            saga_only(lambda r: f"{r.completed_rate:.1f}")),
        row("saga orders PENDING when the load stopped", saga_only(lambda r: str(r.counts["pending_at_end"]))),
        row("saga drain after the load (s)",
            saga_only(lambda r: f"{r.drain_seconds:.1f}" + ("" if r.drained else " (not drained)"))),
        row("orders failed (all tok_ok: should be 0)",
            lambda r: "—" if r.mode == "bare" else str(r.counts["failed_now"])),
        row("answers 503 (refused: overloaded) / other >= 400 / socket errors",
            lambda r: f"{r.load.overloaded} / {r.load.non2xx - r.load.overloaded} / {r.load.socket_errors}"),
        row("load p50 / p99 latency (ms)",
            lambda r: f"{r.load.p50_ms:.0f} / {r.load.p99_ms:.0f}" if r.load.p50_ms is not None else "n/a"),
        row("CPU ms per order, all processes (machine-dependent)",
            lambda r: _per(sum(r.cpu.values()), r.units, 1000)),
    ]
    for group in CPU_GROUPS:
        if any(group in r.cpu for r in runs):
            rows.append(row(f"  {group}", lambda r, g=group: _per(r.cpu[g], r.units, 1000) if g in r.cpu else "—"))
    rows += [
        row("SQL statements per order (sent through Django; BEGIN/COMMIT not included)",
            lambda r: _per(r.statements, r.units)),
        *([row("statements the server ran per order (pg_stat_statements: BEGIN/COMMIT, foreign key checks)",
               lambda r: _per(r.server_statements or 0, r.units))]
          if result.statements_source == "pg_stat_statements" else []),
        row("transactions per order (server: pg_stat_database)", lambda r: _per(r.transactions, r.units)),
        row("broker messages per order (Redis LPUSH + RPUSH)", lambda r: _per(r.pushes, r.units)),
        row("load generator CPU (% of one core)", lambda r: f"{100 * r.load.cpu_seconds / r.window_seconds:.0f}%"),
        row("machine CPU busy during the load (% of all cores)", lambda r: f"{100 * r.machine_busy_share:.0f}%"),
    ]
    notes = [
        f"{result.settings['connections']} concurrent clients ({result.settings['tool']}) for "
        f"{result.settings['duration']:g}s per mode after a {result.settings['warmup']:g}s warm-up; "
        f"gunicorn with {result.settings['web_workers']} workers in every mode; {os.cpu_count()} cores.",
        "An order is one line of one product, paid with tok_ok; the bare endpoint is one INSERT per POST "
        "(benchmarks.api). Orders placed: atomic, confirmed (201); saga and choreography, accepted (202). "
        "Completed during load: placed in the window and final before it ended. The rows named saga are those "
        "of every mode that finishes orders in the background (saga, choreography).",
        "CPU counts every process of the mode and their children, the whole PostgreSQL server and Redis, from "
        "the start of the window until every order placed in it was final, divided by those orders. "
        "PostgreSQL and Redis count whole servers: anything else using them counts too.",
        "Processes: " + "; ".join(f"{r.mode}: {', '.join(r.processes)}" for r in runs) + ".",
    ]
    return CostTable(header=header, rows=rows, verdicts=[line for _, _, line in result.verdicts()], notes=notes)


def render_markdown(result: BenchResult) -> str:
    table = cost_table(result)
    lines = [f"# What an order costs ({result.started_at})", "", markdown_table(table.header, table.rows), ""]
    lines += [f"- {line}" for line in table.verdicts]
    lines += ["", *table.notes, "", "Settings: " + ", ".join(f"{k} {v}" for k, v in result.settings.items()), ""]
    return "\n".join(lines)


# -- the whole run -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_database(args: argparse.Namespace, run_id: str) -> Iterator[str]:
    """--redis-db N: that index of REDIS_URL's server, emptied before and after; otherwise an empty index
    claimed as `make compare` claims one."""
    from urllib.parse import urlsplit

    import redis

    from loadtests.compare import empty_redis_database

    server_url = os.environ["REDIS_URL"]
    if args.redis_db is None:
        with empty_redis_database(server_url, owner=f"bench-{run_id}") as url:
            yield url
        return
    url = urlsplit(server_url)._replace(path=f"/{args.redis_db}").geturl()
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def run_bench(args: argparse.Namespace, log_dir: Path) -> BenchResult:
    """Every mode of `args.modes` in turn; DATABASE_URL and REDIS_URL must point at live servers."""
    started = datetime.now(UTC)
    run_id = f"{started.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    server_url = os.environ["DATABASE_URL"]
    name = f"bench_{run_id}"
    say(f"modes {', '.join(args.modes)}; database {name}; load generator {args.tool}")
    database_url = pgadmin.create_database(server_url, name, fresh=True)
    runs = []
    statements_source = "django"
    try:
        with redis_database(args, run_id) as redis_url, tempfile.TemporaryDirectory() as scratch:
            from loadtests.compare import run_checked

            env = mode_env("atomic", database_url, redis_url, Path(scratch) / "sql", args.web_workers)
            env.pop("SHOP_BENCH_SQL_COUNT_DIR")
            say(f"migrate and seed ({args.customers} customers, {args.products} products)")
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env, "migrate",
                        capture_output=True)
            run_checked([PYTHON, "manage.py", "seed", "--customers", str(args.customers), "--products",
                         str(args.products), "--stock", "1000000", "--balance-cents", str(10**12)], env, "seed",
                        capture_output=True)
            tokens = Path(scratch) / "tokens"
            tokens.write_text(run_checked([PYTHON, "-m", "loadtests.collect", "tokens"], env, "reading tokens",
                                          capture_output=True).stdout)
            servers = Servers(database_url, redis_url)
            statements_source = servers.statements_source
            versions = servers.version()
            if servers.postmaster is None:
                say("PostgreSQL runs elsewhere: its CPU is not counted")
            servers.close()
            for mode in args.modes:
                began = time.monotonic()
                runs.append(run_mode(mode, args, database_url, redis_url, tokens, log_dir, run_id))
                say(f"{mode}: done in {time.monotonic() - began:.0f}s")
    finally:
        if not args.keep_database:
            pgadmin.drop_database(server_url, name)
    settings = {"tool": args.tool, "connections": args.connections, "duration": args.duration,
                "warmup": args.warmup, "web_workers": args.web_workers,
                "saga layout": args.saga_layout or "default (sagas.processes)",
                "PostgreSQL": versions[0], "Redis": versions[1], "Python": platform.python_version()}
    return BenchResult(runs=runs, settings=settings, statements_source=statements_source,
                       started_at=started.strftime("%Y-%m-%d %H:%M:%S UTC"))


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The bench's options, also offered by `loadtests.compare` under `--bench-`."""
    parser.add_argument(f"--{prefix}modes", dest="bench_modes", default=",".join(MODES),
                        help=f"comma-separated, in run order (default {','.join(MODES)})")
    parser.add_argument(f"--{prefix}duration", dest="bench_duration", type=float, default=20.0,
                        help="seconds of load per mode (default 20)")
    parser.add_argument(f"--{prefix}warmup", dest="bench_warmup", type=float, default=3.0)
    parser.add_argument(f"--{prefix}connections", dest="bench_connections", type=int, default=16,
                        help="concurrent clients (default 16)")


def bench_args(namespace: argparse.Namespace, **overrides: Any) -> argparse.Namespace:
    """The full set of bench settings from `add_arguments`' options plus defaults."""
    modes = [m.strip() for m in namespace.bench_modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes or len(set(modes)) != len(modes):
        raise BenchError(f"--modes takes each of {', '.join(MODES)} at most once, not {namespace.bench_modes!r}")
    values = {"modes": modes, "duration": namespace.bench_duration, "warmup": namespace.bench_warmup,
              "connections": namespace.bench_connections, "customers": 20, "products": 50,
              "web_workers": int(os.environ.get("WEB_CONCURRENCY", "4")), "drain_timeout": 60.0,
              "tool": "wrk" if shutil.which("wrk") else "python", "saga_layout": None, "redis_db": None,
              "keep_database": False}
    values.update(overrides)
    return argparse.Namespace(**values)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        client = argparse.ArgumentParser(prog="python -m loadtests.bench client")
        client.add_argument("--url", required=True)
        client.add_argument("--kind", choices=("bare", "orders"), required=True)
        client.add_argument("--connections", type=int, required=True)
        client.add_argument("--seconds", type=float, required=True)
        client.add_argument("--tokens", required=True)
        client.add_argument("--products", type=int, required=True)
        client.add_argument("--prefix", required=True)
        return cmd_client(client.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--web-workers", type=int, help="gunicorn workers in every mode (default WEB_CONCURRENCY "
                                                         "or 4)")
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--products", type=int, default=50)
    parser.add_argument("--drain-timeout", type=float, default=60.0,
                        help="seconds to wait for a saga window's orders to be final")
    parser.add_argument("--tool", choices=("wrk", "python"), help="load generator (default: wrk when installed)")
    parser.add_argument("--saga-layout", help="saga worker layout to measure instead of the default "
                                              "(see sagas.processes.LAYOUTS)")
    parser.add_argument("--redis-db", type=int, help="Redis database index to use (emptied before and after); "
                                                     "default: an empty index from 8 up")
    parser.add_argument("--out", type=Path, help="Markdown file (default reports/bench-<timestamp>.md)")
    parser.add_argument("--keep-database", action="store_true")
    namespace = parser.parse_args(argv)
    try:
        overrides = {key: getattr(namespace, key) for key in ("customers", "products", "drain_timeout",
                                                               "saga_layout", "redis_db", "keep_database")}
        if namespace.web_workers:
            overrides["web_workers"] = namespace.web_workers
        if namespace.tool:
            overrides["tool"] = namespace.tool
        args = bench_args(namespace, **overrides)
        if args.tool == "wrk" and not shutil.which("wrk"):
            raise BenchError("wrk is not installed (apt-get install wrk), or use --tool python")
    except BenchError as exc:
        say(f"error: {exc}")
        return 2
    from runtime.launcher import services

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = namespace.out or REPO_ROOT / "reports" / f"bench-{stamp}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with services():
            result = run_bench(args, out.parent / f"bench-{stamp}-logs")
    except BenchError as exc:
        say(f"error: {exc}")
        return 2
    markdown = render_markdown(result)
    out.write_text(markdown)
    print("\n" + markdown, flush=True)
    say(f"written to {out}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
