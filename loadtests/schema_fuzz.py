"""Schemathesis against the live shop, in each order flow: any 5xx or any answer the schema does not describe
fails the run.

    python -m runtime.launcher exec -- python -m loadtests.schema_fuzz [--modes atomic,saga] [--examples 15]

For each mode, on one fresh database (migrated and seeded) and an empty Redis database index: the mode's
processes as `make run` starts them (gunicorn with runtime.gunicorn_config, and in saga mode the workers, relay
and sweeper), then `st run` on /api/schema/ with a seeded customer's token, every check but one:
`positive_data_acceptance`, which expects any body the schema allows to succeed, while an order for an SKU
that does not exist (a random string is one) is rightly a 400 that no schema can rule out. Two things are left
out: the token revoke endpoint (fuzzing it would log the fuzzer itself out; shop/tests/test_auth.py covers it).
One schemathesis worker: with more, its coverage phase dies inside Hypothesis on Python 3.11 (`SystemError: AST
constructor recursion depth mismatch`, ast.parse in threads) before it sends anything. Exits 1 if any mode
fails; the processes' logs and schemathesis' report stay in reports/schema-fuzz-<timestamp>/.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from loadtests.compare import Processes, empty_redis_database, free_port, run_checked, wait_until_ready
from runtime import REPO_ROOT, pgadmin
from runtime.launcher import process_commands
from shop.env import ORDER_FLOWS

PYTHON = sys.executable
SKIPPED_CHECKS = "positive_data_acceptance"


def say(message: str) -> None:
    print(f"[schema-fuzz] {message}", flush=True)


def mode_env(mode: str, database_url: str, redis_url: str) -> dict[str, str]:
    env = {**os.environ, "ORDER_FLOW": mode, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "PYTHONUNBUFFERED": "1", "WEB_CONCURRENCY": "2"}
    env.pop("CELERY_BROKER_URL", None)
    for service in ("ORDERS", "PAYMENTS", "INVENTORY", "SHIPPING"):
        env.pop(f"{service}_DATABASE_URL", None)
    return env


def fuzz_mode(mode: str, *, database_url: str, redis_url: str, token: str, examples: int, out: Path) -> bool:
    env = mode_env(mode, database_url, redis_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = Processes(process_commands("127.0.0.1", port, flow=mode), env, out / mode)
    processes.start()
    try:
        wait_until_ready(base, processes)
        say(f"{mode}: schemathesis on {base}/api/schema/ ({examples} examples per operation)")
        command = [str(Path(PYTHON).parent / "st"), "run", f"{base}/api/schema/", "--checks", "all",
                   "--exclude-checks", SKIPPED_CHECKS, "--max-examples", str(examples), "--workers", "1",
                   "--header", f"Authorization: Token {token}", "--request-timeout", "20", "--seed", "1",
                   "--generation-database", "none", "--no-color", "--phases", "examples,coverage,fuzzing,stateful",
                   "--exclude-path", "/api/v1/auth/token/revoke",
                   "--report", "junit", "--report-dir", str(out / mode / "schemathesis")]
        result = subprocess.run(command, cwd=REPO_ROOT, env=env)
        say(f"{mode}: {'passed' if result.returncode == 0 else 'FAILED'}")
        return result.returncode == 0
    finally:
        processes.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.schema_fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every mode that runs on one database; 2pc needs a database per service, which this driver does not make.
    parser.add_argument("--modes", default=",".join(mode for mode in ORDER_FLOWS if mode != "2pc"))
    parser.add_argument("--examples", type=int, default=15, help="test cases per API operation and phase")
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    out = REPO_ROOT / "reports" / f"schema-fuzz-{stamp}"
    server_url = os.environ["DATABASE_URL"]
    name = f"schemafuzz_{stamp}_{os.getpid()}"
    database_url = pgadmin.create_database(server_url, name, fresh=True)
    failed = []
    try:
        with empty_redis_database(os.environ["REDIS_URL"], owner=f"schema-fuzz-{stamp}") as redis_url:
            env = mode_env("atomic", database_url, redis_url)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env, "migrate", capture_output=True)
            run_checked([PYTHON, "manage.py", "seed", "--customers", "3", "--products", "5"], env, "seed",
                        capture_output=True)
            token = run_checked([PYTHON, "-m", "loadtests.collect", "tokens"], env, "reading tokens",
                                capture_output=True).stdout.split()[0]
            for mode in modes:
                if not fuzz_mode(mode, database_url=database_url, redis_url=redis_url, token=token,
                                 examples=args.examples, out=out):
                    failed.append(mode)
    finally:
        pgadmin.drop_database(server_url, name)
    say(f"failed: {', '.join(failed)}; logs in {out}" if failed else f"every mode passed; logs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
