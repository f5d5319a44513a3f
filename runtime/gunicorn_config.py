"""gunicorn's settings for the shop's web process: `python -m gunicorn -c python:runtime.gunicorn_config ...`.

gunicorn answers some requests itself, before Django sees them: a header line over `limit_request_field_size`
(431), too many headers, a malformed request line (400), ... Its answers are HTML and it offers no setting or
hook to change them, so each worker replaces the one function that writes them (gunicorn.util.write_error) with
one that writes the same status as problem+json: the shop answers in one format, whoever answers.

Each gunicorn worker counts its own requests for /metrics; the one that answers a scrape adds up every worker's
figures from PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode). The folder is this server's own
(made afresh at start, removed at exit) unless PROMETHEUS_MULTIPROC_DIR is set, in which case it is emptied at
start: two servers must never share one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn import util

from shop import env

# gunicorn's control socket (for gunicornc) defaults to one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or
# ~/.gunicorn/gunicorn.ctl), which two shops on one machine would fight over; the shop does not use it.
control_socket_disable = True
# Production logs are JSON lines, the access line included (shop.logs writes it, with the request id).
accesslog = None if env.get_choice("SHOP_ENV", "development", env.PROFILES) == "production" else "-"
graceful_timeout = 5

_CODES = {400: "malformed_request", 403: "permission_denied", 414: "request_line_too_long",
          417: "expectation_failed", 431: "request_header_too_large", 501: "not_implemented"}


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:  # type: ignore[no-untyped-def]
    from shop.problems import PROBLEM_CONTENT_TYPE, problem_body

    code = _CODES.get(status_int, "server_error" if status_int >= 500 else "malformed_request")
    detail = mesg or reason
    if status_int == 431:
        detail += (f" (a header line is at most {limit_request_field_size} bytes, at most {limit_request_fields} "
                   "headers)")
    body = json.dumps(problem_body(code=code, title=reason, status=status_int, detail=detail)).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn's own defaults, named so the 431's detail can state them.
limit_request_field_size = 8190
limit_request_fields = 100


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    util.write_error = write_problem


# Set before any worker imports prometheus_client (workers fork from this process after it read this file).
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="shop-metrics-")
else:
    _folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    _folder.mkdir(parents=True, exist_ok=True)
    for _stale in _folder.glob("*.db"):
        _stale.unlink()


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
