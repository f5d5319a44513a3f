"""The front door: run the shop, the tests, or any command, with its databases ready.

    python -m runtime.launcher run            # services, migrate, first-time seed, web (+ saga processes)
    python -m runtime.launcher test [ARGS]    # pytest with the services up
    python -m runtime.launcher exec -- CMD    # any command with DATABASE_URL / REDIS_URL set

With DATABASE_URL and REDIS_URL unset, the embedded PostgreSQL and Redis (runtime.embedded) are started and
stopped again at the end; with them set, those servers are used and left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence

from runtime import REPO_ROOT, embedded
from runtime.supervisor import say as _say
from runtime.supervisor import supervise

PYTHON = sys.executable


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

    from runtime.pgadmin import create_database
    from shop.env import SERVICES

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


def settings_problem() -> str | None:
    """What is wrong with the settings the environment gives (ORDER_FLOW=bogus, SHOP_ENV=production without
    SECRET_KEY, ...), found before any server starts; None when nothing is. Checked in a child process with
    stand-in server URLs, since the real ones exist only once the embedded servers run."""
    code = ("from django.core.exceptions import ImproperlyConfigured\n"
            "try:\n    import shop.settings\n"
            "except ImproperlyConfigured as exc:\n    print(exc)\n    raise SystemExit(2)")
    stand_ins = {"DATABASE_URL": "postgresql://settings-check/settings-check", "REDIS_URL": "redis://settings-check/0"}
    result = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, env={**stand_ins, **os.environ},
                            capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return result.stdout.strip() or (result.stderr.strip().splitlines() or ["the settings do not load"])[-1]


def cmd_run(args: argparse.Namespace) -> int:
    problem = settings_problem()
    if problem:
        print(f"[shop] cannot start: {problem}", file=sys.stderr, flush=True)
        return 2
    with services():
        from shop.env import SERVICES

        manage("migrate", "--noinput", "-v", "0")
        for service in SERVICES:
            if os.environ.get(f"{service.upper()}_DATABASE_URL"):
                manage("migrate", "--noinput", "-v", "0", "--database", service)
        _django_setup()
        from django.conf import settings

        base = f"http://{args.host}:{args.port}"
        if not settings.DEMO_ADMIN:
            # Production: no demo customers, no superuser with a known password, no credential on the terminal.
            print(f"\n  Shop running ({settings.ORDER_FLOW} flow, production profile) on {base}\n"
                  "  No demo data or superuser: `manage.py createsuperuser`, `manage.py seed` if wanted.\n", flush=True)
            return supervise(process_commands(args.host, args.port, flow=settings.ORDER_FLOW))
        _first_time_seed()
        from operations.demo import ensure_admin

        token = ensure_admin(username="admin", password=args.admin_password)
        print(
            f"\n  Shop running ({settings.ORDER_FLOW} flow) on {base}\n"
            f"  Admin:    {base}/admin/   login admin / {args.admin_password}\n"
            f"  API docs: {base}/api/docs/\n"
            f"  Health:   {base}/health/ready   Metrics: {base}/metrics"
            f"{'   Flower: http://127.0.0.1:5555/' if args.flower else ''}\n"
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
    parser = argparse.ArgumentParser(prog="python -m runtime.launcher", description=__doc__,
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
