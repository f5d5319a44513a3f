"""Command line of the chaos driver (see loadtests/chaos/__init__.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import loadtests.chaos
from loadtests.chaos.scenarios import SCENARIOS, Pace, Run, say
from loadtests.chaos.servers import DEFAULT_DATA_DIR, PrivateServers, ServersError
from runtime.launcher import REPO_ROOT


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.chaos", description=loadtests.chaos.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", default=os.environ.get("CHAOS_SHORT") == "1",
                        help="less load and shorter faults (CI); also CHAOS_SHORT=1")
    parser.add_argument("--only", help="comma-separated scenario names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"private folder of the chaos servers (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--out", type=Path, help="logs folder (default reports/chaos-<timestamp>)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for scenario in SCENARIOS:
            print(f"{scenario.name:<24} {scenario.mode:<6} {scenario.what}")
        return 0
    chosen = SCENARIOS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {s.name for s in SCENARIOS})
        if unknown:
            say(f"error: unknown scenario(s) {', '.join(unknown)}; --list shows them")
            return 2
        chosen = [s for s in SCENARIOS if s.name in names]
    pace = Pace.short() if args.short else Pace.full()
    out = args.out or REPO_ROOT / "reports" / f"chaos-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        servers = PrivateServers(args.data_dir)
    except ServersError as exc:
        say(f"error: {exc}")
        return 2
    started = time.monotonic()
    say(f"{len(chosen)} scenario(s), {'short' if args.short else 'full'} pace ({pace.clients} clients); "
        f"private servers in {servers.data_dir}; logs in {out}")
    verdicts = []
    try:
        servers.start()
        say(f"PostgreSQL {servers.database_url}, Redis {servers.redis_url}")
        run = Run(servers, pace, out)
        run.migrate()
        for scenario in chosen:
            verdicts.append(run.scenario(scenario))
    except Exception as exc:
        say(f"error: the run stopped: {type(exc).__name__}: {exc}")
        return 2
    finally:
        say("stopping the private servers")
        servers.stop()
    lines = [v.line() for v in verdicts]
    (out / "verdicts.txt").write_text("\n".join(lines) + "\n")
    print(f"\nchaos verdicts ({time.monotonic() - started:.0f}s):", flush=True)
    for line in lines:
        print(line, flush=True)
    return 0 if all(v.holds for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
