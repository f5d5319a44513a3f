"""Errors as `application/problem+json` (RFC 9457), each with a stable `type`.

One exception handler turns every failure the API can meet (validation, authentication, throttling, the
business errors of shop.errors) into a problem document; `server_error` does the same for a crash, so no
client ever has to parse an HTML error page.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from shop.errors import ShopError

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
    body = problem_body(code="server_error", title="Internal server error", status=500,
                        detail="The server failed to handle this request.", instance=request.get_full_path())
    return JsonResponse(body, status=500, content_type=PROBLEM_CONTENT_TYPE)


def not_found(request, exception=None) -> JsonResponse:  # type: ignore[no-untyped-def]
    body = problem_body(code="not_found", title="Not found", status=404,
                        detail="No resource at this address.", instance=request.get_full_path())
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)
