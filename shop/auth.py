"""API tokens that expire and can be revoked, and the throttle on guessing passwords for them.

Tokens are DRF's (one per user, `Authorization: Token <key>`), valid for API_TOKEN_TTL_HOURS after they were
issued. Logging in again returns the same token while it is valid and a new one after it expired or was revoked.

Wrong passwords are counted in Redis (shared by every web worker) per client address and per username; at
AUTH_THROTTLE_FAILURES within AUTH_THROTTLE_WINDOW_SECONDS, that address or username is refused (429 with
Retry-After) until the window ends, before the password is even checked. Successes are not counted, so a load
test that logs many customers in from one address is never throttled.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import Throttled

from shop.redis import get_redis


def token_expires_at(*, token: Token) -> datetime | None:
    if not settings.API_TOKEN_TTL_HOURS:
        return None
    return token.created + timedelta(hours=settings.API_TOKEN_TTL_HOURS)


def token_expired(*, token: Token) -> bool:
    expires_at = token_expires_at(token=token)
    return expires_at is not None and expires_at <= timezone.now()


def token_issue(*, user: AbstractBaseUser) -> Token:
    """The user's valid token: the current one, or a new one in place of one that expired."""
    with transaction.atomic():
        token = Token.objects.select_for_update().filter(user=user).first()
        if token is not None and not token_expired(token=token):
            return token
        if token is not None:
            token.delete()
        return Token.objects.create(user=user)


def token_revoke(*, user: AbstractBaseUser) -> None:
    """The user's token stops working at once; the next login issues a new one."""
    Token.objects.filter(user=user).delete()


def _keys(*, address: str, username: str) -> list[str]:
    return [f"shop:login-failures:address:{address}", f"shop:login-failures:username:{username.lower()[:150]}"]


def login_throttle_check(*, address: str, username: str) -> None:
    """Raise Throttled (429, Retry-After) if the address or the username has failed too often lately."""
    pipeline = get_redis().pipeline(transaction=False)
    for key in _keys(address=address, username=username):
        pipeline.get(key)
        pipeline.ttl(key)
    replies = pipeline.execute()
    waits = [ttl for count, ttl in zip(replies[::2], replies[1::2], strict=True)
             if count is not None and int(count) >= settings.AUTH_THROTTLE_FAILURES and ttl > 0]
    if waits:
        raise Throttled(wait=max(waits) - 1, detail="Too many failed logins from this address or for this "
                                                    "username; try again after Retry-After seconds.")


def login_failure_record(*, address: str, username: str) -> None:
    pipeline = get_redis().pipeline(transaction=True)
    for key in _keys(address=address, username=username):
        # The window starts at the first failure: SET NX gives the count its expiry once, INCR keeps it.
        pipeline.set(key, 0, ex=settings.AUTH_THROTTLE_WINDOW_SECONDS, nx=True)
        pipeline.incr(key)
    pipeline.execute()


def login_success_record(*, username: str) -> None:
    """A right password ends the username's run of failures (not the address's)."""
    get_redis().delete(_keys(address="", username=username)[1])
