"""The chaos run's own PostgreSQL and Redis: the embedded servers of runtime.embedded, in a private data folder.

Chaos stops and restarts its servers under load, so it never uses the machine's services nor the shared
`.data/` servers that a `make run` may be using: SHOP_DATA_DIR points runtime.embedded at `.data/chaos/`
(PostgreSQL listens on a Unix socket in that folder, so its URL survives a restart) and Redis is started
on one fixed loopback port for the whole run, so every process finds it again after a restart.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

from runtime import embedded
from runtime.launcher import REPO_ROOT

DEFAULT_DATA_DIR = REPO_ROOT / ".data" / "chaos"


class ServersError(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_private(data_dir: Path) -> Path:
    """Refuse the shared `.data/` folder (or anything above it): its servers may be serving someone."""
    resolved = data_dir.resolve()
    shared = (REPO_ROOT / ".data").resolve()
    if resolved == shared or shared.is_relative_to(resolved):
        raise ServersError(f"{data_dir} is the shared data folder; chaos needs a private one such as "
                           f"{DEFAULT_DATA_DIR}")
    return resolved


class PrivateServers:
    """Start, restart and stop the private PostgreSQL and Redis."""

    def __init__(self, data_dir: Path = DEFAULT_DATA_DIR) -> None:
        self.data_dir = check_private(data_dir)
        self.database_url = ""
        self.redis_port = 0
        self._lock: IO[str] | None = None

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _here(self) -> None:
        """runtime.embedded reads its folder from the environment on every call: make it this one, always, so
        no call can reach the shared servers."""
        os.environ["SHOP_DATA_DIR"] = str(self.data_dir)

    def start(self) -> None:
        self._here()
        self.claim()
        self.start_postgres()
        self.start_redis()

    def claim(self) -> None:
        """One chaos run at a time per folder: another one would restart the servers under this one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.data_dir / "chaos.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ServersError(f"another chaos run is using {self.data_dir}") from None
        self._lock = lock

    def start_postgres(self) -> None:
        self._here()
        self.database_url = embedded.start_postgres()

    def stop_postgres(self) -> None:
        """A fast shutdown: sessions are rolled back and their clients see the connection go."""
        self._here()
        embedded.stop_postgres()
        if embedded.running_database_url() is not None:
            raise ServersError("the private PostgreSQL did not stop")

    def start_redis(self) -> None:
        self._here()
        if not self.redis_port:
            running = embedded.running_redis_url()
            self.redis_port = int(running.rsplit(":", 1)[1].split("/")[0]) if running else _free_port()
        url = embedded.start_redis(port=self.redis_port)
        if not url.startswith(f"redis://127.0.0.1:{self.redis_port}/"):
            raise ServersError(f"the private Redis came back at {url}, not on port {self.redis_port}")

    def stop_redis(self) -> None:
        self._here()
        embedded.stop_redis()
        deadline = time.monotonic() + 10
        while embedded.running_redis_url() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self._lock is None:
            return  # never started (or another run holds the folder): nothing of ours to stop
        self.stop_redis()
        self.stop_postgres()
        self._lock.close()
        self._lock = None
