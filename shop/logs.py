"""What every log line knows about its context, and the JSON lines of the production profile.

A request gets an id (the client's `X-Request-ID` when it sends a sane one, else a fresh one), echoed in the
response; code that learns which order or saga it works on adds it with `log_context_add`, a consumer of saga
messages with `log_context`. Every record then carries `request_id`, `order_id` and `saga_id` (empty when not
known), in plain text as in JSON, so one grep finds every line about an order across web and workers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

CONTEXT_FIELDS = ("request_id", "order_id", "saga_id")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("shop_log_context", default=None)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
REQUEST_ID_HEADER = "X-Request-ID"

access_logger = logging.getLogger("shop.access")


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Every line logged inside the block carries `fields` (None values are left out)."""
    token = _context.set({**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def log_context_add(**fields: object) -> None:
    """Add to the context of the request (or block) being handled; outside of one it does nothing."""
    current = _context.get()
    if current is not None:
        current.update({k: str(v) for k, v in fields.items() if v is not None})


class ContextFilter(logging.Filter):
    """Puts the context fields on every record, so a format string or the JSON formatter can use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, current.get(name, ""))
        return True


class WithoutTraceback(logging.Filter):
    """For loggers whose every record is an expected client error (a Host not allowed: Django logs each with
    its traceback, and scanners send thousands): the one line, without the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*CONTEXT_FIELDS, "method", "path", "status", "duration_ms"):
            value = getattr(record, name, "")
            if value != "":
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class RequestContextMiddleware:
    """Gives each request its id and context; in production also writes its access line (gunicorn's is off
    there, being plain text without the request id)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        from django.conf import settings

        self.get_response = get_response
        self.access_log = settings.PRODUCTION

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _SANE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        started = time.perf_counter()
        with log_context(request_id=request_id):
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            if self.access_log:
                access_logger.info("%s %s %s", request.method, request.path, response.status_code, extra={
                    "method": request.method, "path": request.path, "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
        return response
