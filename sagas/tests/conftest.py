"""Real processes for the saga tests: Celery workers, outbox relays and the sweeper, as subprocesses
pointed at the test databases. Nothing runs eagerly; messages go through the real broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from sagas.processes import QUEUES, relay_aliases, relay_command, sweeper_command, worker_command

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def _url(config: dict) -> str:
    host = config["HOST"] or ""
    host = quote(host, safe="") if host.startswith("/") else host
    auth = config["USER"] or ""
    if config.get("PASSWORD"):
        auth += f":{quote(config['PASSWORD'], safe='')}"
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{config['NAME']}"


class Stack:
    """Named long-running processes, started on demand and stopped (or killed) by name."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        self.stop(name)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def kill(self, name: str) -> None:
        self.stop(name, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    # The standard layout: one worker on every queue, a relay per database, the sweeper.
    def worker(self, name: str = "worker", queues: tuple[str, ...] = QUEUES, **env: str) -> None:
        self.start(name, worker_command(PYTHON, queues, name, 2), **env)

    def relay(self, name: str = "relay", alias: str = "default", **env: str) -> None:
        self.start(name, relay_command(PYTHON, alias), **env)

    def relays(self, **env: str) -> None:
        for alias in relay_aliases():
            self.relay(f"relay-{alias}", alias, **env)

    def sweeper(self) -> None:
        self.start("sweeper", sweeper_command(PYTHON))

    def standard(self) -> None:
        """Make the running set exactly the standard layout (fault tests change it)."""
        wanted = {"worker", "sweeper", *(f"relay-{alias}" for alias in relay_aliases())}
        for name in list(self.procs):
            if name not in wanted or not self.running(name):
                self.stop(name)
        if not self.running("worker"):
            self.worker()
        for alias in relay_aliases():
            if not self.running(f"relay-{alias}"):
                self.relay(f"relay-{alias}", alias)
        if not self.running("sweeper"):
            self.sweeper()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.log_dir.glob("*.log"))


@pytest.fixture(scope="session")
def saga_stack(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "ORDER_FLOW": "saga",
        # Short timeouts so the crash tests see the sweeper act within seconds.
        "SAGA_STEP_TIMEOUT_SECONDS": "2",
        "SAGA_SWEEP_INTERVAL_SECONDS": "0.2",
        "SAGA_MAX_RESENDS": "20",
        "DATABASE_URL": _url(settings.DATABASES["default"]),
    }
    for alias, config in settings.DATABASES.items():
        if alias != "default":
            env[f"{alias.upper()}_DATABASE_URL"] = _url(config)
    # Forget messages a killed worker left unacknowledged in an earlier session: this is a fresh database.
    from shop.redis import get_redis

    get_redis().flushdb()
    stack = Stack(env, tmp_path_factory.mktemp("saga-processes"))
    yield stack
    stack.stop_all()


@pytest.fixture
def saga(saga_stack: Stack, settings) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """ORDER_FLOW=saga in this process, and the standard set of processes running."""
    settings.ORDER_FLOW = "saga"
    settings.SAGA_STEP_TIMEOUT_SECONDS = float(saga_stack.env["SAGA_STEP_TIMEOUT_SECONDS"])
    saga_stack.standard()
    started = time.monotonic()
    yield saga_stack
    if time.monotonic() - started > 60:
        print(saga_stack.logs())


@pytest.fixture
def no_processes(saga_stack: Stack, settings) -> Stack:  # type: ignore[no-untyped-def]
    """ORDER_FLOW=saga with nothing running: the test itself plays the relay, the workers and the sweeper."""
    settings.ORDER_FLOW = "saga"
    saga_stack.stop_all()
    return saga_stack
