"""Load-test every order flow on the same machine, data and load shape, one after the other; write one report.

    python -m loadtests.compare                                   # every available mode, the defaults
    python -m loadtests.compare --modes atomic --users 4 --duration 10s
    python -m loadtests.compare --mix tok_decline=0.1,tok_timeout=0.05,undeliverable=0.05 --processes
    python -m loadtests.compare --bench                           # and `make bench`'s cost table after the modes

For each mode in turn: a fresh database (and a fresh Redis database index), migrate and seed, start the mode's
processes (web, plus the saga workers, relay and sweeper), wait until the web answers, run Locust in its own
process (it gevent-patches the standard library, so it is never imported here), drain until every order is
final, run the audit, read the numbers from the database, stop everything. Then `reports/<timestamp>/` gets
report.md and report.html beside each mode's Locust CSV/HTML and process logs. Exits 1 if any audit failed.

Without DATABASE_URL / REDIS_URL the embedded PostgreSQL and Redis are started (and stopped after) as for
`make run`; with them set, each mode gets new databases on that PostgreSQL server (dropped again after a clean
audit; kept for inspection after a failed one) and an empty Redis database index, which is flushed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from loadtests.bench import BenchError, BenchResult, bench_args, cost_table, run_bench
from loadtests.bench import add_arguments as add_bench_arguments
from loadtests.bench import render_markdown as render_bench_markdown
from loadtests.mix import LoadMix, format_token_shares, parse_mix
from loadtests.report import (
    ModeResult,
    Report,
    comparison_table,
    markdown_table,
    read_failures,
    read_json_lines,
    read_samples,
    write_report,
)
from runtime import pgadmin
from runtime.launcher import REPO_ROOT, services
from shop.env import ORDER_FLOWS, SERVICES

PYTHON = sys.executable
HOST = "127.0.0.1"
REDIS_CLAIM_KEY = "loadtests:compare:claimed-by"
# Settings of the shop that change what is measured; the report records their values.
RECORDED_ENV = ("WEB_CONCURRENCY", "PAYMENT_DECLINE_RATE", "PAYMENT_FAULT_RATE", "PAYMENT_LATENCY_MS",
                "PAYMENT_TIMEOUT_MS", "PAYMENT_ATTEMPTS", "DB_CONFLICT_RETRIES", "DB_CONN_MAX_AGE",
                "API_THROTTLE_RATE", "CELERY_TASK_TIME_LIMIT")


def say(message: str) -> None:
    print(f"[compare] {message}", flush=True)


class CompareError(Exception):
    pass


# -- modes ------------------------------------------------------------------------------------------------


# A mode whose ORDER_FLOW value is not its module's name.
FLOW_MODULES = {"2pc": "twopc"}


def missing_pieces(mode: str) -> list[str]:
    """What a mode still lacks in this checkout (a flow that is being built is skipped, not crashed into)."""
    needed = [f"orders/flows/{FLOW_MODULES.get(mode, mode)}.py"]
    if mode == "saga":
        needed += ["sagas/processes.py", "sagas/selectors.py"]
    if mode == "choreography":
        needed += ["sagas/choreography.py", "orders/choreography.py"]
    # By file, not by import: importing orders.flows would need Django set up in this process.
    return [path for path in needed if not (REPO_ROOT / path).is_file()]


def resolve_modes(requested: str | None) -> list[str]:
    if requested is None:
        modes = []
        for mode in ORDER_FLOWS:
            missing = missing_pieces(mode)
            if missing:
                say(f"skipping mode {mode}: not in this checkout yet ({', '.join(missing)} missing)")
            else:
                modes.append(mode)
        return modes
    modes = [m.strip() for m in requested.split(",") if m.strip()]
    for mode in modes:
        if mode not in ORDER_FLOWS:
            raise CompareError(f"unknown mode {mode!r} (ORDER_FLOW is one of {', '.join(ORDER_FLOWS)})")
        missing = missing_pieces(mode)
        if missing:
            raise CompareError(f"mode {mode} is not available in this checkout: {', '.join(missing)} missing")
    if len(set(modes)) != len(modes):
        raise CompareError("each mode may be named once")
    return modes


def duration_seconds(text: str) -> float:
    """Locust's `-t`: 45, 45s, 2m, 1m30s, 1h."""
    if re.fullmatch(r"\d+", text):
        return float(text)
    parts = re.findall(r"(\d+)\s*([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 45s, 2m or 1m30s")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


# -- databases --------------------------------------------------------------------------------------------


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


@contextlib.contextmanager
def empty_redis_database(server_url: str, owner: str) -> Iterator[str]:
    """An empty Redis database index of the server, claimed for this mode and flushed when done.

    The Celery queues and the simulated gateway's memory live in Redis: a mode must not inherit messages or
    tok_flaky attempt counts (keyed by order id, which restarts with each fresh database) from an earlier one.
    Only an empty index from 8 up is claimed (`make run` uses 0 and the test suite 1), so nobody else's data
    is flushed."""
    import redis

    claimed = None
    for index in range(8, 16):
        url = _with_path(server_url, f"/{index}")
        client = redis.Redis.from_url(url)
        try:
            if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, owner, nx=True):
                claimed = client
                break
        except redis.ResponseError:  # past the server's last database index
            break
    if claimed is None:
        raise CompareError("no empty Redis database index (8-15) to run in")
    try:
        yield url
    finally:
        claimed.flushdb()


# -- processes --------------------------------------------------------------------------------------------


class Processes:
    """The mode's long-running processes, each in its own session with its output in a log file."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], log_dir: Path) -> None:
        self.commands, self.env, self.log_dir = commands, env, log_dir
        self.children: dict[str, subprocess.Popen] = {}
        self.logs: list[IO[bytes]] = []

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, command in self.commands.items():
            log = (self.log_dir / f"{name}.log").open("wb")
            self.logs.append(log)
            self.children[name] = subprocess.Popen(command, cwd=REPO_ROOT, env=self.env, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True)

    def exited(self) -> list[str]:
        return [f"{name} (exit {child.returncode})" for name, child in self.children.items()
                if child.poll() is not None]

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        for log in self.logs:
            log.close()


def wait_until_ready(base_url: str, processes: Processes, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        exited = processes.exited()
        if exited:
            raise CompareError(f"{', '.join(exited)} before the web answered; see {processes.log_dir}")
        try:
            with urllib.request.urlopen(f"{base_url}/api/v1/products", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise CompareError(f"the web did not answer within {timeout:.0f}s; see {processes.log_dir}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def run_checked(command: Sequence[str], env: dict[str, str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, text=True, **kwargs)
    if completed.returncode != 0:
        detail = (completed.stderr or "").strip()[-2000:] if isinstance(completed.stderr, str) else ""
        raise CompareError(f"{what} failed with exit {completed.returncode}{': ' + detail if detail else ''}")
    return completed


# -- one mode ---------------------------------------------------------------------------------------------


def _last_aggregate(history: Path) -> dict[str, str] | None:
    try:
        with history.open(newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if row.get("Name") == "Aggregated"]
    except (FileNotFoundError, csv.Error):
        return None
    return rows[-1] if rows else None


def run_locust(args: argparse.Namespace, mix: LoadMix, base_url: str, out: Path, processes: Processes) -> int:
    command = [
        PYTHON, "-m", "locust", "-f", str(REPO_ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.duration, "--host", base_url,
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "locust.html"),
        "--stop-timeout", str(int(mix.poll_timeout) + 5), "--only-summary", "--loglevel", "WARNING",
    ]
    env = {**os.environ, **mix.to_env(), "LOAD_SAMPLES_PATH": str(out / "samples.csv"),
           "PYTHONPATH": str(REPO_ROOT)}
    total = duration_seconds(args.duration)
    started = time.monotonic()
    with (out / "locust.log").open("wb") as log:
        locust = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            next_progress = 5.0
            while locust.poll() is None:
                time.sleep(0.5)
                elapsed = time.monotonic() - started
                exited = processes.exited()
                if exited:
                    raise CompareError(f"{', '.join(exited)} during the load; see {processes.log_dir}")
                if elapsed >= next_progress:
                    next_progress += 5
                    row = _last_aggregate(out / "locust_stats_history.csv")
                    if row:
                        say(f"  load {min(elapsed, total):.0f}/{total:.0f}s: {row['User Count']} users, "
                            f"{float(row['Requests/s']):.0f} req/s, {row['Total Request Count']} requests, "
                            f"{row['Total Failure Count']} failures")
        finally:
            if locust.poll() is None:
                locust.terminate()
                locust.wait(30)
    # Locust exits 1 when any request failed; that is a result to report, not a crash of the run.
    if locust.returncode not in (0, 1) or not (out / "samples.csv").exists():
        raise CompareError(f"Locust exited with {locust.returncode}; see {out / 'locust.log'}")
    return locust.returncode


def mode_env(mode: str, database_urls: dict[str, str], redis_url: str) -> dict[str, str]:
    env = {**os.environ, "ORDER_FLOW": mode, "DATABASE_URL": database_urls["default"], "REDIS_URL": redis_url,
           "PYTHONUNBUFFERED": "1"}
    # Nothing from the caller's environment may point a mode at another database or broker than its own.
    env.pop("CELERY_BROKER_URL", None)
    for service in SERVICES:
        env.pop(f"{service.upper()}_DATABASE_URL", None)
        if service in database_urls:
            env[f"{service.upper()}_DATABASE_URL"] = database_urls[service]
    return env


def run_mode(mode: str, args: argparse.Namespace, mix: LoadMix, run_id: str, run_dir: Path) -> ModeResult:
    out = run_dir / mode
    out.mkdir(parents=True, exist_ok=True)
    # Anything else busy on the machine skews the numbers; the report shows how busy it was.
    load_before = os.getloadavg()[0]
    server_url = os.environ["DATABASE_URL"]
    # Atomic mode keeps every service on one connection by design; only other modes split the databases, and 2pc
    # always does (its transaction spans them).
    split = (args.db_per_service and mode != "atomic") or mode == "2pc"
    base_name = f"compare_{run_id}_{mode}"
    names = {"default": base_name, **({s: f"{base_name}_{s}" for s in SERVICES} if split else {})}
    say(f"{mode}: fresh database{'s' if split else ''} {', '.join(names.values())}")
    urls = {alias: pgadmin.create_database(server_url, name, fresh=True) for alias, name in names.items()}
    audit_ok = False
    try:
        with empty_redis_database(os.environ["REDIS_URL"], owner=run_id) as redis_url:
            env = mode_env(mode, urls, redis_url)
            say(f"{mode}: migrate and seed ({args.customers} customers, {args.products} products x "
                f"{args.stock} units)")
            for alias in urls:
                run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0", "--database", alias], env,
                            f"migrate {alias}", capture_output=True)
            run_checked([PYTHON, "manage.py", "seed", "--customers", str(args.customers), "--products",
                         str(args.products), "--stock", str(args.stock), "--balance-cents", str(args.balance_cents),
                         "--password", mix.password], env, "seed", capture_output=True)
            port = free_port()
            base_url = f"http://{HOST}:{port}"
            listed = run_checked([PYTHON, "-m", "loadtests.collect", "commands", "--host", HOST, "--port", str(port),
                                  *(["--per-service-workers"] if args.processes else [])],
                                 env, "listing the processes", capture_output=True)
            commands: dict[str, list[str]] = json.loads(listed.stdout.strip().splitlines()[-1])
            processes = Processes(commands, env, out / "logs")
            layout = (f"{', '.join(commands)} (web: gunicorn, {os.environ.get('WEB_CONCURRENCY', '4')} workers); "
                      f"{'a database per service' if split else 'one database'}")
            say(f"{mode}: starting {', '.join(commands)} on {base_url}")
            processes.start()
            sampler, sampler_log = None, None
            try:
                ready = wait_until_ready(base_url, processes)
                say(f"{mode}: web ready in {ready:.1f}s; load: {args.users} users (+{args.spawn_rate}/s) for "
                    f"{args.duration}")
                if mode == "saga":
                    sampler_log = (out / "outbox.jsonl").open("wb")
                    sampler = subprocess.Popen([PYTHON, "-m", "loadtests.collect", "outbox", "--interval", "1"],
                                               cwd=REPO_ROOT, env=env, stdout=sampler_log,
                                               stderr=subprocess.DEVNULL)
                run_locust(args, mix, base_url, out, processes)
                if sampler is not None:
                    sampler.terminate()
                    sampler.wait(10)
                say(f"{mode}: load done; draining until every order is final (at most {args.drain_timeout:.0f}s)")
                collected_run = run_checked(
                    [PYTHON, "-m", "loadtests.collect", "stats", "--drain-timeout", str(args.drain_timeout)],
                    env, "collecting the numbers", stdout=subprocess.PIPE)
                collected = json.loads(collected_run.stdout.strip().splitlines()[-1])
                if not collected["drained"]:
                    say(f"{mode}: still not final after {args.drain_timeout:.0f}s; auditing anyway")
                audit = subprocess.run([PYTHON, "manage.py", "audit"], cwd=REPO_ROOT, env=env, text=True,
                                       capture_output=True)
                audit_ok = audit.returncode == 0
                audit_lines = audit.stdout.splitlines() + audit.stderr.strip().splitlines()[-3:]
                for line in audit.stdout.splitlines():
                    say(f"{mode}: {line}")
            finally:
                if sampler is not None and sampler.poll() is None:
                    sampler.kill()
                if sampler_log is not None:
                    sampler_log.close()
                say(f"{mode}: stopping {', '.join(commands)}")
                processes.stop()
    finally:
        if audit_ok and not args.keep_databases:
            for name in names.values():
                pgadmin.drop_database(server_url, name)
        elif not audit_ok:
            say(f"{mode}: keeping database(s) {', '.join(names.values())} for inspection")
    return ModeResult(
        mode=mode,
        samples=read_samples(out / "samples.csv"),
        collected=collected,
        audit_ok=audit_ok,
        audit_lines=audit_lines,
        outbox_samples=read_json_lines(out / "outbox.jsonl"),
        failures=read_failures(out / "locust_failures.csv"),
        locust_html=f"{mode}/locust.html",
        layout=f"{layout}; 1-minute load average before the mode started: {load_before:.2f}"
               + (f" (BUSY: more than half of the {os.cpu_count()} cores were in use before the load; "
                  "the figures of this mode are skewed)" if load_before > 0.5 * (os.cpu_count() or 1) else ""),
    )


# -- the whole run ----------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    info = {"cores": str(os.cpu_count()), "OS": platform.platform(), "Python": platform.python_version()}
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)
        if cpu:
            info["CPU"] = cpu
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        info["memory"] = f"{memory / 2**30:.1f} GiB"
    return info


def versions(results: Sequence[ModeResult]) -> dict[str, str]:
    found = {}
    for package in ("Django", "djangorestframework", "celery", "kombu", "locust", "gunicorn", "psycopg",
                    "redis", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    servers = next((r.collected.get("versions") for r in results if r.collected.get("versions")), {})
    found.update({f"{name} server": version for name, version in servers.items()})
    return found


def settings_used(args: argparse.Namespace, mix: LoadMix, modes: Sequence[str]) -> dict[str, Any]:
    return {
        "modes": ", ".join(modes),
        "users / spawn rate / duration": f"{args.users} / {args.spawn_rate}/s / {args.duration}",
        "customers / products / stock / balance": f"{args.customers} / {args.products} / {args.stock} units / "
                                                  f"{args.balance_cents} cents",
        "hot SKU share (SKU-0001)": mix.hot_sku_share,
        "payment tokens": format_token_shares(mix.token_shares),
        "undeliverable share": mix.undeliverable_share,
        "replay share": mix.replay_share,
        "think time (s)": f"{mix.think_min:g}-{mix.think_max:g}",
        "poll interval, backing off to / bound (s)": f"{mix.poll_interval:g}, {mix.poll_max_interval:g} / "
                                                     f"{mix.poll_timeout:g}",
        "saga workers": "one per service queue (--processes)" if args.processes else "one for all queues",
        "databases": "a database per service (--db-per-service)" if args.db_per_service else "one database",
        "PostgreSQL / Redis": "embedded" if args.embedded else "external (DATABASE_URL / REDIS_URL)",
        **{name: os.environ.get(name, "(default)") for name in RECORDED_ENV},
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    mix = LoadMix()
    parser = argparse.ArgumentParser(prog="python -m loadtests.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", help=f"comma-separated, in run order (default: every available one of "
                                        f"{', '.join(ORDER_FLOWS)})")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--duration", default="45s", help="of the load, per mode (Locust's -t: 45s, 2m, ...)")
    parser.add_argument("--customers", type=int, default=50, help="seeded, and logged in as in turn")
    parser.add_argument("--products", type=int, default=mix.products)
    parser.add_argument("--stock", type=int, default=1000, help="units of each product")
    parser.add_argument("--balance-cents", type=int, default=5_000_000, help="each customer's wallet")
    parser.add_argument("--hot-sku-share", type=float, default=mix.hot_sku_share,
                        help="share of orders for SKU-0001")
    parser.add_argument("--mix", default="", help=f"payment token shares and undeliverable share, e.g. "
                                                  f"tok_decline=0.1,tok_timeout=0.05,undeliverable=0.05 "
                                                  f"(tok_ok takes the rest; default "
                                                  f"{format_token_shares(mix.token_shares)},"
                                                  f"undeliverable={mix.undeliverable_share:g})")
    parser.add_argument("--replay-share", type=float, default=mix.replay_share,
                        help="share of orders re-sent with the same Idempotency-Key")
    parser.add_argument("--processes", action="store_true",
                        help="saga mode: one Celery worker per service queue instead of one for all")
    parser.add_argument("--db-per-service", action="store_true",
                        help="saga mode: each service in its own database")
    parser.add_argument("--drain-timeout", type=float, default=60, help="seconds to wait for PENDING orders")
    parser.add_argument("--out", type=Path, help="report directory (default reports/<timestamp>)")
    parser.add_argument("--keep-databases", action="store_true", help="keep each mode's database afterwards")
    parser.add_argument("--bench", action=argparse.BooleanOptionalAction, default=False,
                        help="after the modes, run `make bench` (loadtests/bench.py) and add its cost table")
    bench_options = parser.add_argument_group("the bench (with --bench)")
    add_bench_arguments(bench_options, prefix="bench-")
    args = parser.parse_args(argv)
    duration_seconds(args.duration)
    if args.users < 1 or args.spawn_rate <= 0:
        parser.error("--users must be at least 1 and --spawn-rate positive")
    return args


def build_mix(args: argparse.Namespace) -> LoadMix:
    shares, undeliverable = parse_mix(args.mix)
    mix = LoadMix(customers=args.customers, products=args.products, hot_sku_share=args.hot_sku_share,
                  token_shares=shares, replay_share=args.replay_share)
    return mix if undeliverable is None else replace(mix, undeliverable_share=undeliverable)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        mix = build_mix(args)
        modes = resolve_modes(args.modes)
    except (ValueError, CompareError) as exc:
        say(f"error: {exc}")
        return 2
    if not modes:
        say("error: no mode to run")
        return 2
    started = datetime.now(UTC)
    # The pid keeps two runs started in the same second (a test beside a person) off each other's databases.
    run_id = f"{started.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"
    run_dir = args.out or REPO_ROOT / "reports" / started.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    args.embedded = not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
    say(f"modes {', '.join(modes)}; {args.users} users for {args.duration} each; report in {run_dir}")
    results = []
    bench: BenchResult | None = None
    try:
        with services():
            for mode in modes:
                began = time.monotonic()
                results.append(run_mode(mode, args, mix, run_id, run_dir))
                say(f"{mode}: done in {time.monotonic() - began:.0f}s")
            if args.bench:
                say("the cost of an order (loadtests/bench.py)")
                bench = run_bench(bench_args(args), run_dir / "bench-logs")
                (run_dir / "bench.md").write_text(render_bench_markdown(bench))
    except (CompareError, BenchError) as exc:
        say(f"error: {exc}")
        return 2
    report = Report(
        title=f"Order flow comparison: {' vs '.join(modes)}",
        started_at=started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        machine=machine(),
        settings=settings_used(args, mix, modes),
        versions=versions(results),
        modes=results,
        cost=cost_table(bench) if bench else None,
    )
    (run_dir / "run.json").write_text(json.dumps(
        {"settings": report.settings, "mix": mix.as_dict(), "machine": report.machine, "versions": report.versions,
         "modes": {r.mode: r.collected for r in results}}, indent=2, default=str))
    markdown, page = write_report(report, run_dir)
    header, rows = comparison_table(report)
    print("\n" + markdown_table(header, rows) + "\n", flush=True)
    if bench is not None:
        print(render_bench_markdown(bench), flush=True)
    say(f"report: {markdown} and {page}")
    failed = [r.mode for r in results if not r.audit_ok]
    if failed:
        say(f"AUDIT FAILED for {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
