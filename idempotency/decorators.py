"""`@idempotent` for a DRF handler: the Idempotency-Key protocol of DESIGN.md section 5 around any POST.

    class OrderListCreateApi(ListAPIView):
        @idempotent
        def post(self, request): ...   # request_claim(request).key is the client's key

The first request under a key runs and its final response is stored; a repeat with the same fingerprint is
answered with exactly those bytes plus `Idempotent-Replayed: true`; another body under the same key is 422; a
repeat while the first still runs is 409 with Retry-After. What is stored is decided by the outcome: a success
or a BusinessError (declined, out of stock, ...) is the answer for good; a validation error, a transient
fault or a crash releases the key, so the client can fix the request or simply try again.

Keys are scoped per user, so the handler's view must require authentication.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.template.response import SimpleTemplateResponse
from rest_framework.request import Request
from rest_framework.views import APIView

from idempotency.errors import InvalidIdempotencyKey, MissingIdempotencyKey
from idempotency.services import (
    Claim,
    StoredResponse,
    key_claim,
    key_complete,
    key_release,
    request_fingerprint,
)
from shop.errors import BusinessError

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Replayed with the body; the rest (Vary, Allow, ...) is added afresh by DRF on every response.
STORED_HEADERS = ("Content-Type", "Location")
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
_CLAIM_ATTRIBUTE = "idempotency_claim"

Handler = Callable[..., HttpResponseBase]


def request_claim(request: Request) -> Claim | None:
    """The claim the request runs under; None when it came without a key and none is required."""
    return getattr(request, _CLAIM_ATTRIBUTE, None)


def idempotent(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def wrapper(view: APIView, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request.headers.get(KEY_HEADER)
        if key is None and not settings.IDEMPOTENCY_KEY_REQUIRED:
            return handler(view, request, *args, **kwargs)
        # An IdempotencyError raised here is answered by the API's exception handler, like any ShopError.
        if key is None:
            raise MissingIdempotencyKey(f"Send an {KEY_HEADER} header (1-255 printable characters) so "
                                        "this request can be retried safely.")
        if not _VALID_KEY.fullmatch(key):
            raise InvalidIdempotencyKey(f"An {KEY_HEADER} is 1 to 255 printable ASCII characters.")
        path = request.get_full_path()
        fingerprint = request_fingerprint(method=request.method, path=path, body=request.data)
        outcome = key_claim(user_id=request.user.pk, key=key, method=request.method, path=path,
                            fingerprint=fingerprint)
        if isinstance(outcome, StoredResponse):
            return _replay(outcome)
        setattr(request, _CLAIM_ATTRIBUTE, outcome)
        return _run(handler, view, request, outcome, args, kwargs)

    return wrapper


def _run(handler: Handler, view: APIView, request: Request, claim: Claim, args: tuple, kwargs: dict
         ) -> HttpResponseBase:
    try:
        response = handler(view, request, *args, **kwargs)
        keep = response.status_code < 400
    except Exception as exc:
        try:
            # Turned into its problem+json response here rather than in dispatch, so it can be stored.
            response = view.handle_exception(exc)
        except Exception:
            # A crash: let a retry run again. (A killed worker raises no Exception; its lease runs out instead.)
            key_release(claim=claim)
            raise
        keep = isinstance(exc, BusinessError)
    if not keep:
        key_release(claim=claim)
        return response
    # Rendered now to store the exact bytes the client gets; dispatch finalizing it again changes nothing, and
    # a rendered response is not rendered twice.
    response = view.finalize_response(request, response, *args, **kwargs)
    if isinstance(response, SimpleTemplateResponse):
        response.render()
    key_complete(claim=claim, status=response.status_code, body=response.content.decode(),
                 headers={name: response[name] for name in STORED_HEADERS if name in response})
    return response


def _replay(stored: StoredResponse) -> HttpResponse:
    return HttpResponse(stored.body, status=stored.status, headers={**stored.headers, REPLAYED_HEADER: "true"})

