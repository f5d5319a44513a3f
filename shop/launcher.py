"""The front door: run the shop, the tests, or any command, with its databases ready.

    python -m shop.launcher run            # services, migrate, first-time seed, web (+ saga processes)
    python -m shop.launcher test [ARGS]    # pytest with the services up
    python -m shop.launcher exec -- CMD    # any command with DATABASE_URL / REDIS_URL set

With DATABASE_URL and REDIS_URL unset, the embedded PostgreSQL and Redis (shop.embedded) are started and
stopped again at the end; with them set, those servers are used and left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from shop import embedded
from shop.backoff import Backoff

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _say(message: str) -> None:
    print(f"[shop] {message}", flush=True)


@contextlib.contextmanager
def services(*, redis_db: int = 0) -> Iterator[None]:
    """DATABASE_URL and REDIS_URL point at live servers inside this block (Redis database `redis_db` of the
    embedded server, so tests never share a broker with a running shop).

    Embedded servers are started when needed and stopped by the last launcher that uses them.
    """
    embedded_postgres = not os.environ.get("DATABASE_URL")
    embedded_redis = not os.environ.get("REDIS_URL")
    uses_embedded = embedded_postgres or embedded_redis
    try:
        if uses_embedded:
            with embedded.clients_lock():
                embedded.client_join()
                if embedded_postgres:
                    os.environ["DATABASE_URL"] = embedded.start_postgres()
                    _say(f"embedded PostgreSQL at {embedded.data_dir() / 'postgres'}")
                if embedded_redis:
                    os.environ["REDIS_URL"] = embedded.start_redis(database=redis_db)
                    _say(f"embedded Redis at {os.environ['REDIS_URL']}")
        if os.environ.get("SHOP_DB_PER_SERVICE") == "1":
            _ensure_service_databases()
        yield
    finally:
        if uses_embedded:
            with embedded.clients_lock():
                if embedded.client_leave():
                    if embedded_redis:
                        embedded.stop_redis()
                    if embedded_postgres:
                        embedded.stop_postgres()


def _ensure_service_databases() -> None:
    """Give every service its own database on the DATABASE_URL server (unless its URL is already set)."""
    import dj_database_url

    from shop.env import SERVICES
    from shop.pgadmin import create_database

    base = os.environ["DATABASE_URL"]
    prefix = dj_database_url.parse(base)["NAME"]
    for service in SERVICES:
        variable = f"{service.upper()}_DATABASE_URL"
        if not os.environ.get(variable):
            os.environ[variable] = create_database(base, f"{prefix}_{service}")
    _say("a database per service: " + ", ".join(f"{prefix}_{s}" for s in SERVICES))


def manage(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=REPO_ROOT, check=check)


def _django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    import django

    django.setup()


def _first_time_seed() -> None:
    from django.contrib.auth import get_user_model

    from inventory.selectors import product_list

    # Both checks: with a database per service, the catalogue may be new while the customers are not.
    if get_user_model().objects.filter(username="customer1").exists() and product_list().exists():
        _say("reusing the existing data (run `manage.py seed` to reset it)")
        return
    manage("seed")


def process_commands(host: str, port: int, *, flow: str, per_service_workers: bool = False,
                     flower: bool = False) -> dict[str, list[str]]:
    """The long-running processes of order flow `flow`, by name (sagas.processes has the list)."""
    from sagas.processes import process_commands as commands
    from shop.env import service_database_urls

    return commands(PYTHON, host, port, flow=flow, per_service_workers=per_service_workers, flower=flower,
                    service_urls=service_database_urls())


@dataclasses.dataclass
class _Child:
    name: str
    argv: list[str]
    backoff: Backoff
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None


# A child that stayed up this long before dying is restarted after the shortest delay again.
STABLE_SECONDS = 30.0


def supervise(commands: dict[str, list[str]], *, backoff_initial: float = 0.5, backoff_cap: float = 30.0,
              stable_seconds: float = STABLE_SECONDS) -> int:
    """Run every command until Ctrl-C / SIGTERM, restarting any that dies.

    A child that exits (crash, SIGKILL, OOM) is restarted after a capped, jittered backoff that grows while it
    keeps dying and starts over once it stayed up `stable_seconds`; the others, web included, keep running.
    Whatever the dead child left in its process group (gunicorn or Celery pool workers) is killed first, so
    its replacement does not compete with orphans. On Ctrl-C / SIGTERM every child gets SIGTERM, then SIGKILL
    after 15 s. Must run in the main thread (it installs signal handlers).
    """
    stopping = False

    def _stop(signum, frame):  # type: ignore[no-untyped-def]
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    children = [_Child(name, argv, Backoff(initial=backoff_initial, cap=backoff_cap))
                for name, argv in commands.items()]

    def start(child: _Child) -> None:
        child.process = subprocess.Popen(child.argv, cwd=REPO_ROOT, start_new_session=True)
        child.started_at, child.restart_at = time.monotonic(), None
        _say(f"{child.name} started (pid {child.process.pid})" if not child.restarts else
             f"{child.name} restarted (pid {child.process.pid}, restart #{child.restarts})")

    try:
        for child in children:
            start(child)
        while not stopping:
            now = time.monotonic()
            for child in children:
                process = child.process
                if process is not None and process.poll() is None:
                    continue
                if child.restart_at is None:
                    assert process is not None
                    _kill_group(process.pid, signal.SIGKILL)
                    uptime = now - child.started_at
                    if uptime >= stable_seconds:
                        child.backoff.reset()
                    delay = child.backoff.next_delay()
                    child.restart_at = now + delay
                    _say(f"{child.name} (pid {process.pid}) exited with {process.returncode} after {uptime:.1f} s; "
                         f"restart #{child.restarts + 1} in {delay:.2f} s")
                elif now >= child.restart_at and not stopping:
                    child.restarts += 1
                    start(child)
            time.sleep(0.1)
    finally:
        running = [child for child in children if child.process is not None and child.process.poll() is None]
        _say("stopping " + ", ".join(child.name for child in running))
        for child in running:
            assert child.process is not None
            _kill_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _say(f"{child.name} (pid {child.process.pid}) ignored SIGTERM for 15 s; killing it")
            # SIGKILL for the group either way: a child that exited may have left workers of its own behind.
            _kill_group(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
    return 0


def _kill_group(pgid: int, sig: int) -> None:
    """Signal the process group a child leads (started with start_new_session, so its pid is the group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def cmd_run(args: argparse.Namespace) -> int:
    with services():
        from shop.env import SERVICES

        manage("migrate", "--noinput", "-v", "0")
        for service in SERVICES:
            if os.environ.get(f"{service.upper()}_DATABASE_URL"):
                manage("migrate", "--noinput", "-v", "0", "--database", service)
        _django_setup()
        from django.conf import settings

        _first_time_seed()
        from shop.demo import ensure_admin

        token = ensure_admin(username="admin", password=args.admin_password)
        base = f"http://{args.host}:{args.port}"
        print(
            f"\n  Shop running ({settings.ORDER_FLOW} flow) on {base}\n"
            f"  Admin:    {base}/admin/   login admin / {args.admin_password}\n"
            f"  API docs: {base}/api/docs/\n"
            f"  API token (admin): {token}\n"
            f"  Customers: customer1..customerN / password\n"
            f"  Try: curl -H 'Authorization: Token {token}' {base}/api/v1/products\n"
            f"  A process that dies is restarted; Ctrl-C stops everything.\n",
            flush=True,
        )
        return supervise(process_commands(args.host, args.port, flow=settings.ORDER_FLOW, flower=args.flower))


def cmd_test(args: argparse.Namespace) -> int:
    with services(redis_db=1):
        return subprocess.run([PYTHON, "-m", "pytest", *args.rest], cwd=REPO_ROOT).returncode


def cmd_exec(args: argparse.Namespace) -> int:
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if not rest:
        raise SystemExit("exec needs a command, e.g. `exec -- python manage.py audit`")
    with services():
        return subprocess.run(rest, cwd=REPO_ROOT).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shop.launcher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the shop until Ctrl-C")
    run.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    run.add_argument("--admin-password", default=os.environ.get("ADMIN_PASSWORD", "admin"))
    run.add_argument("--flower", action="store_true", default=os.environ.get("FLOWER") == "1",
                     help="also run Flower (Celery's monitor) on 127.0.0.1:5555")
    run.set_defaults(func=cmd_run)
    test = sub.add_parser("test", help="run pytest with the services up")
    test.add_argument("rest", nargs=argparse.REMAINDER)
    test.set_defaults(func=cmd_test)
    exe = sub.add_parser("exec", help="run a command with the services up")
    exe.add_argument("rest", nargs=argparse.REMAINDER)
    exe.set_defaults(func=cmd_exec)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["test"], ["exec"]):
        # Everything after the sub-command belongs to pytest or the command, flags included.
        return {"test": cmd_test, "exec": cmd_exec}[argv[0]](argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
