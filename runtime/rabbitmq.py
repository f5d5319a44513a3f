"""RabbitMQ for the test suite's RabbitMQ pass: a virtual host of its own, created and removed around a command.

    python -m runtime.rabbitmq -- python -m runtime.launcher test -m saga ...

With RabbitMQ answering on RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672), it creates a fresh vhost
with `rabbitmqctl` (which needs root or the rabbitmq user), gives the URL's user every permission on it, runs
the command with CELERY_BROKER_URL pointing at it, and deletes the vhost (its queues and messages with it)
whatever the command did. With no RabbitMQ answering it says so and exits 0: the pass is skipped, not failed.
`rabbitmqctl` also reports what the saga tests wait for (messages ready and unacknowledged per queue), which
AMQP itself does not tell.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672"


def server_url() -> str:
    return os.environ.get("RABBITMQ_URL", DEFAULT_URL).rstrip("/")


def answers(url: str, *, timeout: float = 2.0) -> bool:
    """Something accepts TCP connections where `url` points (RabbitMQ's port)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=timeout):
            return True
    except OSError:
        return False


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _ctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


@contextlib.contextmanager
def temporary_vhost(url: str, *, prefix: str = "shop_test") -> Iterator[str]:
    """A new vhost on the server of `url` for the block; yields the broker URL that uses it."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    user = unquote(urlsplit(url).username or "guest")
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield f"{url}/{quote(name, safe='')}"
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _ctl("delete_vhost", name)


def queue_counts(url: str) -> dict[str, tuple[int, int]]:
    """(messages ready, messages unacknowledged) per queue of the vhost of `url`."""
    counts = {}
    for line in _ctl("list_queues", "-p", vhost_of(url), "name", "messages_ready", "messages_unacknowledged",
                     "--no-table-headers").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1].isdigit():
            counts[fields[0]] = (int(fields[1]), int(fields[2]))
    return counts


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        raise SystemExit("usage: python -m runtime.rabbitmq -- <command>")
    url = server_url()
    where = f"{urlsplit(url).hostname}:{urlsplit(url).port or 5672}"
    if not answers(url):
        print(f"[shop] RabbitMQ pass skipped: nothing answers at {where} (start RabbitMQ, or set RABBITMQ_URL)",
              flush=True)
        return 0
    try:
        with temporary_vhost(url) as broker_url:
            print(f"[shop] RabbitMQ at {where}, vhost {vhost_of(broker_url)} (removed afterwards)", flush=True)
            return subprocess.run(command, env={**os.environ, "CELERY_BROKER_URL": broker_url}).returncode
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"[shop] RabbitMQ answers at {where} but `rabbitmqctl {' '.join(exc.cmd[2:4])}` failed "
                         f"(run as root or as the rabbitmq user): {exc.stderr.strip()}") from exc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
