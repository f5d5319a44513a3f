"""Errors as `application/problem+json` (RFC 9457), each with a stable `type`.

One exception handler turns every failure the API can meet (validation, authentication, throttling, the
business errors of shop.errors) into a problem document; `server_error` does the same for a crash, so no
client ever has to parse an HTML error page.

A database or Redis that cannot be reached is not a crash: both paths answer it 503
`dependency-unavailable` with Retry-After, and drop the dead database connection so the next request
connects afresh. (With DEBUG on, Django shows its debug page instead of calling `server_error`.)
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.db import connections
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from shop.backoff import one_line
from shop.db import is_conflict
from shop.errors import ConcurrencyConflict, ShopError, database_unavailable_errors, dependency_unavailable

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"


def problem_type(code: str) -> str:
    return TYPE_PREFIX + code.replace("_", "-")


def problem_body(*, code: str, title: str, status: int, detail: str, instance: str = "", **extra: Any) -> dict:
    body = {"type": problem_type(code), "title": title, "status": status, "detail": detail, "code": code}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_response(body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


_DRF_CODES: dict[type[exceptions.APIException], tuple[str, str]] = {
    exceptions.ValidationError: ("validation_error", "Invalid request"),
    exceptions.ParseError: ("malformed_request", "Malformed request"),
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication required"),
    exceptions.AuthenticationFailed: ("authentication_failed", "Authentication failed"),
    exceptions.PermissionDenied: ("permission_denied", "Permission denied"),
    exceptions.NotFound: ("not_found", "Not found"),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed"),
    exceptions.NotAcceptable: ("not_acceptable", "Not acceptable"),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type"),
    exceptions.Throttled: ("throttled", "Too many requests"),
    RequestTooLarge: ("request_too_large", "Request too large"),
}


def _drf_problem(exc: exceptions.APIException, instance: str) -> tuple[dict, dict[str, str]]:
    code, title = next(
        (pair for cls, pair in _DRF_CODES.items() if isinstance(exc, cls)), (exc.default_code, "Error")
    )
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        detail = "The request body or parameters are invalid; see `errors`."
        extra["errors"] = exc.detail
    else:
        detail = str(exc.detail)
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait) + 1)
    body = problem_body(code=code, title=title, status=exc.status_code, detail=detail, instance=instance,
                        **extra)
    return body, headers


def exception_handler(exc: Exception, context: dict) -> Response | None:
    request = context.get("request")
    instance = request.get_full_path() if request is not None else ""
    exc = transient_error(exc) or exc
    if isinstance(exc, ShopError):
        body = problem_body(code=exc.code, title=exc.title, status=exc.status, detail=exc.detail,
                            instance=instance, **exc.extra)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return problem_response(body, headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()
    if isinstance(exc, exceptions.APIException):
        body, headers = _drf_problem(exc, instance)
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed) and not headers:
            # Token is the first authenticator, so an unauthenticated API call is a 401, never a 403.
            headers["WWW-Authenticate"] = "Token"
            body["status"] = 401
        return problem_response(body, headers)
    return None


def server_error(request, *args, **kwargs) -> JsonResponse:  # type: ignore[no-untyped-def]
    # Django calls this handler inside its `except` block, so the error is at hand: one raised outside a DRF
    # view (a middleware, the session, the admin) by a dependency that is away is a 503 here too.
    exc = sys.exc_info()[1]
    transient = transient_error(exc) if exc is not None else None
    if transient is not None:
        body = problem_body(code=transient.code, title=transient.title, status=transient.status,
                            detail=transient.detail, instance=request.get_full_path())
        return JsonResponse(body, status=transient.status, content_type=PROBLEM_CONTENT_TYPE,
                            headers={"Retry-After": str(transient.retry_after)})
    body = problem_body(code="server_error", title="Internal server error", status=500,
                        detail="The server failed to handle this request.", instance=request.get_full_path())
    return JsonResponse(body, status=500, content_type=PROBLEM_CONTENT_TYPE)


_REPORT_EVERY_SECONDS = 10.0
_reported_at = 0.0
_unreported = 0


def transient_error(exc: BaseException) -> ShopError | None:
    """The 503 for an error that says "try again later" rather than "this request is wrong" or "a bug":
    a deadlock that outlived its retries, or a database or Redis that cannot be reached."""
    if isinstance(exc, ShopError):
        return None
    if is_conflict(exc):
        return ConcurrencyConflict("A conflicting transaction won; try again.")
    unavailable = dependency_unavailable(exc)
    if unavailable is None:
        return None
    if isinstance(exc, database_unavailable_errors()):
        close_broken_connections()
    _report(exc)
    return unavailable


def close_broken_connections() -> None:
    """Close the database connections that died, so the next request opens a new one instead of failing on
    the same dead socket (Django closes a connection after an error only if DB_CONN_HEALTH_CHECKS or the end of
    a request cycle finds it broken, and the test client runs no such cycle). A connection inside an atomic
    block is left to the block, which drops it when its rollback fails."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.in_atomic_block and not connection.is_usable():
            with contextlib.suppress(Exception):
                connection.close()


def _report(exc: BaseException) -> None:
    """One log line per period for a dependency that is away, not one per request (Django logs each 503)."""
    global _reported_at, _unreported
    now = time.monotonic()
    if now - _reported_at < _REPORT_EVERY_SECONDS:
        _unreported += 1
        return
    logger.warning("dependency unavailable (%d more since the last report): %s: %s", _unreported,
                   type(exc).__name__, one_line(exc))
    _reported_at, _unreported = now, 0


def not_found(request, exception=None) -> JsonResponse:  # type: ignore[no-untyped-def]
    body = problem_body(code="not_found", title="Not found", status=404,
                        detail="No resource at this address.", instance=request.get_full_path())
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)


def bad_request(request, exception=None) -> JsonResponse:  # type: ignore[no-untyped-def]
    """Django's own 400s, raised before any view (a Host header not in ALLOWED_HOSTS, an oversize form)."""
    if isinstance(exception, RequestDataTooBig):
        body = problem_body(code="request_too_large", title="Request too large", status=413,
                            detail="The request body is too large.", instance=request.path)
    elif isinstance(exception, DisallowedHost):
        # request.get_host() is what failed: only the raw header can be named.
        host = request.META.get("HTTP_HOST", "")
        body = problem_body(code="bad_host", title="Host not allowed", status=400,
                            detail=f"The Host header {host[:200]!r} is not one this shop answers to; add it to "
                                   "ALLOWED_HOSTS (comma-separated) to serve it.", instance=request.path)
    else:
        body = problem_body(code="malformed_request", title="Malformed request", status=400,
                            detail=str(exception) if exception else "The request is malformed.",
                            instance=request.path)
    return JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)

