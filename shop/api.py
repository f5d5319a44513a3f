from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from shop.auth import (
    login_failure_record,
    login_success_record,
    login_throttle_check,
    token_expires_at,
    token_issue,
    token_revoke,
)

# A token is a credential: no cache on the way (a proxy, the browser) may keep a copy of the answer.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenApi(APIView):
    """Exchange a username and password for the API token to send as `Authorization: Token <token>`."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        request=AuthTokenSerializer,
        responses={
            200: inline_serializer("TokenResponse", {
                "token": serializers.CharField(),
                "expires_at": serializers.DateTimeField(allow_null=True,
                                                        help_text="null when tokens do not expire"),
            }),
            400: OpenApiResponse(description="Missing fields, or wrong username or password (problem+json)"),
            429: OpenApiResponse(description="Too many wrong passwords from this address or for this username: "
                                             "retry after Retry-After (problem+json)"),
        },
    )
    def post(self, request: Request) -> Response:
        address = BaseThrottle().get_ident(request)
        username = request.data.get("username") if isinstance(request.data, dict) else None
        username = username if isinstance(username, str) else ""
        login_throttle_check(address=address, username=username)
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        if not serializer.is_valid():
            # Only a wrong username or password counts against the throttle, not a malformed request.
            if username and set(serializer.errors) == {"non_field_errors"}:
                login_failure_record(address=address, username=username)
            raise ValidationError(serializer.errors)
        user = serializer.validated_data["user"]
        login_success_record(username=username)
        token = token_issue(user=user)
        return Response({"token": token.key, "expires_at": token_expires_at(token=token)}, headers=NO_STORE)


class TokenRevokeApi(APIView):
    """Revoke the caller's token: it stops working at once, and the next login issues a new one."""

    @extend_schema(request=None, responses={
        204: OpenApiResponse(description="Revoked"),
        401: OpenApiResponse(description="Not authenticated (problem+json)"),
    })
    def post(self, request: Request) -> Response:
        token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT, headers=NO_STORE)
