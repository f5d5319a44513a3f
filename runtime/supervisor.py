"""Supervision of the long-running processes `make run` starts: restart what dies, stop everything on Ctrl-C."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time

from runtime import REPO_ROOT
from shop.backoff import Backoff


def say(message: str) -> None:
    print(f"[shop] {message}", flush=True)


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
        say(f"{child.name} started (pid {child.process.pid})" if not child.restarts else
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
                    say(f"{child.name} (pid {process.pid}) exited with {process.returncode} after {uptime:.1f} s; "
                         f"restart #{child.restarts + 1} in {delay:.2f} s")
                elif now >= child.restart_at and not stopping:
                    child.restarts += 1
                    start(child)
            time.sleep(0.1)
    finally:
        running = [child for child in children if child.process is not None and child.process.poll() is None]
        say("stopping " + ", ".join(child.name for child in running))
        for child in running:
            assert child.process is not None
            _kill_group(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{child.name} (pid {child.process.pid}) ignored SIGTERM for 15 s; killing it")
            # SIGKILL for the group either way: a child that exited may have left workers of its own behind.
            _kill_group(child.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
    return 0


def _kill_group(pgid: int, sig: int) -> None:
    """Signal the process group a child leads (started with start_new_session, so its pid is the group id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
