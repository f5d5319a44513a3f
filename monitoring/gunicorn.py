"""gunicorn settings for the shop's web process: prometheus_client's multiprocess mode for /metrics.

    gunicorn -c python:monitoring.gunicorn shop.wsgi:application ...

Each gunicorn worker counts its own requests; /metrics, answered by any one of them, adds up every worker's
figures from PROMETHEUS_MULTIPROC_DIR. The folder is this server's own (made afresh at start, removed at
exit) unless PROMETHEUS_MULTIPROC_DIR is set, in which case it is emptied at start: two servers must never
share one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Set before any worker imports prometheus_client (workers fork from this process after it read this file).
_OWN = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="shop-metrics-")
else:
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    if _OWN:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
