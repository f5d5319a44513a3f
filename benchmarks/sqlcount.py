"""Counting the SQL statements Django sends, across every process of a benchmarked mode.

Installed only when SHOP_BENCH_SQL_COUNT_DIR is set (benchmarks.apps). Each process keeps its count in a file
of its own in that directory, named by its pid and memory-mapped, so counting is one memory write per
statement and a reader sums the files at any moment without asking the processes anything. A forked child
(gunicorn and Celery prefork workers) starts a file of its own.

What is counted: every statement through a Django cursor (queries, INSERT/UPDATE/DELETE, savepoints, raw SQL
through `connection.cursor()`), each `executemany` once. Not counted: BEGIN/COMMIT/ROLLBACK, which the driver
sends by itself, and connection health checks; the server's transaction counters show those.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SLOT = struct.Struct("=Q")
_lock = threading.Lock()
_directory: Path | None = None
_view: memoryview | None = None


def _reset_after_fork() -> None:
    global _view
    _view = None


def _open_view() -> memoryview:
    assert _directory is not None
    path = _directory / str(os.getpid())
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, _SLOT.size)
        mapped = mmap.mmap(fd, _SLOT.size)
    finally:
        os.close(fd)
    return memoryview(mapped).cast("Q")


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    global _view
    with _lock:
        if _view is None:
            _view = _open_view()
        _view[0] += 1
    return execute(sql, params, many, context)


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def install(directory: str) -> None:
    global _directory
    from django.db.backends.signals import connection_created

    _directory = Path(directory)
    _directory.mkdir(parents=True, exist_ok=True)
    os.register_at_fork(after_in_child=_reset_after_fork)
    connection_created.connect(_on_connection_created, dispatch_uid="benchmarks.sqlcount")


def total(directory: str | Path) -> int:
    """Statements counted so far by every process that wrote into `directory` (live or exited)."""
    count = 0
    for path in Path(directory).iterdir():
        data = path.read_bytes()
        if len(data) == _SLOT.size:
            count += _SLOT.unpack(data)[0]
    return count
