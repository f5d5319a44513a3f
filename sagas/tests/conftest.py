"""Real processes for the saga tests: Celery workers, outbox relays and the sweeper, as subprocesses
pointed at the test databases. Nothing runs eagerly; messages go through the real broker.

The processes outlive a test (starting them costs seconds), so a test must not end while they still work on
its messages: pytest-django empties the databases after a transactional test, and a reply handled after that
would leave rows, or a late delivery, for the next test to count. The `saga` fixture therefore waits, after
each test, until the stack is idle: no saga running, no outbox row waiting, no message in a queue or taken by a
worker and not acknowledged.
"""

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
import redis
from django.conf import settings

from runtime import rabbitmq
from sagas.models import OutboxMessage, SagaInstance
from sagas.processes import QUEUES, relay_aliases, relay_command, sweeper_command, worker_command
from shop.testing import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# How long the stack may take to finish a test's last messages (a loaded 2-core machine is slow).
IDLE_TIMEOUT = 90
# kombu's Redis transport keeps a message a worker took, until it is acknowledged, in these keys; the
# queues themselves are lists named after the queue, plus one per priority level.
UNACKED, UNACKED_INDEX, UNACKED_MUTEX = "unacked", "unacked_index", "unacked_mutex"
PRIORITY_SEPARATOR = "\x06\x16"


def broker() -> redis.Redis | None:
    """A client of the broker when it is Redis (the test default), None for another broker."""
    url = settings.CELERY_BROKER_URL
    return redis.Redis.from_url(url) if url.startswith(("redis://", "rediss://", "unix://")) else None


def _queue_keys(queue: str) -> list[str]:
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{priority}" for priority in range(1, 10))]


def broker_backlog() -> dict[str, int]:
    """Messages the broker holds, per queue, and `unacked`: taken by a worker and not acknowledged yet."""
    client = broker()
    if client is None:
        # RabbitMQ: its own count (AMQP tells a queue's ready messages, not the unacknowledged ones).
        counts = {queue: 0 for queue in QUEUES} | {UNACKED: 0}
        for queue, (ready, unacked) in rabbitmq.queue_counts(settings.CELERY_BROKER_URL).items():
            if queue in QUEUES:
                counts[queue] += ready
                counts[UNACKED] += unacked
    else:
        counts = {queue: sum(client.llen(key) for key in _queue_keys(queue)) for queue in QUEUES}
        counts[UNACKED] = client.hlen(UNACKED)
    return {name: count for name, count in counts.items() if count}


def broker_purge() -> None:
    """Forget every message in the broker: only when no worker runs (a fresh database, or nothing to do them)."""
    client = broker()
    if client is not None:
        client.delete(*[key for queue in QUEUES for key in _queue_keys(queue)], UNACKED, UNACKED_INDEX,
                      UNACKED_MUTEX)
        return
    from shop.celery import app

    # RabbitMQ gives a message nobody acknowledged back to its queue when its consumer goes: with no worker
    # running, emptying the queues forgets everything.
    with app.connection_for_write() as connection:
        for queue in QUEUES:
            bound = app.amqp.queues[queue].bind(connection.default_channel)
            bound.declare()
            bound.purge()


def in_flight() -> str:
    """What the saga stack still has to do, in words; empty when it is idle."""
    busy = []
    for alias in settings.DATABASES:
        active = list(SagaInstance.objects.using(alias).filter(state__in=SagaInstance.ACTIVE)
                      .values_list("state", "current_step", "resends"))
        if active:
            busy.append(f"{alias}: {len(active)} active sagas (state, step, resends) {active[:5]}")
        pending = list(OutboxMessage.objects.using(alias).filter(published_at__isnull=True)
                       .values_list("task", "available_at"))
        if pending:
            busy.append(f"{alias}: {len(pending)} outbox rows waiting {pending[:5]}")
    # Asking RabbitMQ takes a rabbitmqctl run: only once the databases are idle.
    backlog = broker_backlog() if not busy or broker() is not None else {}
    if backlog:
        busy.append(f"broker: {backlog}")
    return "; ".join(busy)


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
        # The settings each process was started with on top of the stack's (a fault test's relay, ...), and the
        # modules it was told to import.
        self.overrides: dict[str, dict[str, str]] = {}

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        self.stop(name)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        self.overrides[name] = env
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

    def wait_idle(self, timeout: float = IDLE_TIMEOUT) -> str:
        """Wait until nothing is in flight, seen twice in a row (a message can be between a queue and a
        worker for an instant); return what is still in flight after `timeout` ("" when idle)."""
        seen_idle = [False]

        def idle_twice() -> bool:
            idle = not in_flight()
            twice, seen_idle[0] = idle and seen_idle[0], idle
            return twice

        wait_until(idle_twice, timeout=timeout, interval=0.2)
        return in_flight()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    # The standard layout: one worker on every queue, a relay per database, the sweeper.
    def worker(self, name: str = "worker", queues: tuple[str, ...] = QUEUES, *, concurrency: int = 2,
               loglevel: str = "", include: tuple[str, ...] = (), **env: str) -> None:
        """`include`: modules the worker imports besides the apps' (a test's own saga definitions)."""
        argv = worker_command(PYTHON, queues, name, concurrency)
        if loglevel:
            argv[argv.index("--loglevel") + 1] = loglevel
        if include:
            argv += ["--include", ",".join(include)]
        self.start(name, argv, **env)
        self._note_include(name, include)

    def _note_include(self, name: str, include: tuple[str, ...]) -> None:
        # A process told to import a test's modules is not the standard one either.
        if include:
            self.overrides[name] = {**self.overrides[name], "--include": ",".join(include)}

    def pool_processes(self, name: str) -> list[int]:
        """The pids of a worker's pool processes (the children of its main process)."""
        proc = self.procs[name]
        return [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]

    def relay(self, name: str = "relay", alias: str = "default", **env: str) -> None:
        self.start(name, relay_command(PYTHON, alias), **env)

    def relays(self, **env: str) -> None:
        for alias in relay_aliases():
            self.relay(f"relay-{alias}", alias, **env)

    def sweeper(self, include: tuple[str, ...] = ()) -> None:
        self.start("sweeper", [*sweeper_command(PYTHON), *(f"--include={module}" for module in include)])
        self._note_include("sweeper", include)

    def standard(self) -> None:
        """Make the running set exactly the standard layout (fault tests change it)."""
        wanted = {"worker", "sweeper", *(f"relay-{alias}" for alias in relay_aliases())}
        for name in list(self.procs):
            # A process a test started with settings of its own (a faulty relay) is not the standard one.
            if name not in wanted or not self.running(name) or self.overrides.get(name):
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
        "SAGA_RESEND_MAX_SECONDS": "4",
        "DATABASE_URL": _url(settings.DATABASES["default"]),
    }
    for alias, config in settings.DATABASES.items():
        if alias != "default":
            env[f"{alias.upper()}_DATABASE_URL"] = _url(config)
    # Forget messages a killed worker left unacknowledged in an earlier session: this is a fresh database.
    broker_purge()
    stack = Stack(env, tmp_path_factory.mktemp("saga-processes"))
    yield stack
    stack.stop_all()


@pytest.fixture
def saga(saga_stack: Stack, settings) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """ORDER_FLOW=saga in this process, and the standard set of processes running.

    Afterwards, with the standard set running again, waits until the stack is idle, so that the databases
    are emptied for the next test with nothing left in flight (a test that cannot get there fails here).
    """
    settings.ORDER_FLOW = "saga"
    settings.SAGA_STEP_TIMEOUT_SECONDS = float(saga_stack.env["SAGA_STEP_TIMEOUT_SECONDS"])
    saga_stack.standard()
    started = time.monotonic()
    yield saga_stack
    if time.monotonic() - started > 60:
        print(saga_stack.logs())
    saga_stack.standard()
    left = saga_stack.wait_idle()
    assert not left, f"still in flight {IDLE_TIMEOUT} s after the test: {left}\n{saga_stack.logs()}"


@pytest.fixture
def no_processes(saga_stack: Stack, settings) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """ORDER_FLOW=saga with nothing running: the test itself plays the relay, the workers and the sweeper.

    Whatever the test published is for rows that are about to be emptied: the broker forgets it afterwards.
    """
    settings.ORDER_FLOW = "saga"
    saga_stack.stop_all()
    yield saga_stack
    broker_purge()
