"""The OpenAPI schema says every answer the API gives, errors included (drf-spectacular's AutoSchema, extended).

Each operation lists, besides its own answers, the problem+json errors the shop's machinery gives on any
request of its kind: 400 (malformed, invalid, a bad Host), 401 where a token is needed, 404 for a missing
object or page, 413 and 415 for a body, 429 when throttled, 503 while a dependency is away. An answer an
operation declares with only a description (a 402 of the order endpoint, ...) gets the problem body too.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from shop.problems import PROBLEM_CONTENT_TYPE


class ProblemSerializer(serializers.Serializer):
    """An error as RFC 9457 describes it, with the shop's stable `code`."""

    type = serializers.CharField(help_text="/problems/<code>, stable per error")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    instance = serializers.CharField(required=False, help_text="the path the request was sent to")
    errors = serializers.JSONField(required=False, help_text="validation-error: what was wrong, by field")


_DESCRIPTIONS = {
    "400": "Malformed or invalid request, or a Host not in ALLOWED_HOSTS (problem+json)",
    "401": "No token, or a token that is wrong, expired or revoked (problem+json)",
    "404": "No such object or page (problem+json)",
    "413": "Body larger than MAX_REQUEST_BYTES (problem+json)",
    "415": "Body not application/json (problem+json)",
    "429": "Throttled: retry after Retry-After (problem+json)",
    "503": "A dependency (PostgreSQL, Redis) is unavailable, or the shop is overloaded: retry after Retry-After "
           "(problem+json)",
}


class ShopAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            responses.setdefault(code, self._problem(code, _DESCRIPTIONS[code]))
        for code, response in responses.items():
            if code >= "400" and not response.get("content"):
                responses[code] = {**response, **self._problem(code, response["description"])}
        return dict(sorted(responses.items()))

    def _problem(self, code: str, description: str) -> dict[str, Any]:
        response = self._get_response_for_code(ProblemSerializer, code, [PROBLEM_CONTENT_TYPE], "response")
        return {**response, "description": description}

    def _error_codes(self) -> list[str]:
        codes = ["400", "429", "503"]
        # A wrong token is refused wherever one is read, even where none is needed.
        if self.view.get_authenticators() or not all(isinstance(permission, AllowAny)
                                                     for permission in self.view.get_permissions()):
            codes.append("401")
        if self.method in ("POST", "PUT", "PATCH"):
            codes += ["413", "415"]
        if "{" in self.path or self._is_list_view():
            codes.append("404")  # a missing object, or a page past the last
        return codes


class ListLimitsExtension(OpenApiSerializerFieldExtension):
    """A nested list of serializers (`Child(many=True, max_length=...)`) with its limits: drf-spectacular
    documents the items but not allow_empty, min_length or max_length."""

    target_class = "rest_framework.serializers.ListSerializer"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        field = self.target
        component = auto_schema.resolve_serializer(field.child, direction)
        schema: dict[str, Any] = {"type": "array", "items": component.ref}
        if field.min_length is not None or not field.allow_empty:
            schema["minItems"] = max(field.min_length or 0, 0 if field.allow_empty else 1)
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
        return schema
