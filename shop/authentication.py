"""API token authentication: DRF's TokenAuthentication, with its lookup as one hand-written statement, and
tokens that expire (API_TOKEN_TTL_HOURS, shop.auth).

Every authenticated request pays for this lookup, and the ORM's `select_related` query cost more Python time
than the statement itself (see shop.db.fetch). Same header, same answers, same `request.user` and
`request.auth` as DRF's.
"""

from __future__ import annotations

from functools import cache

from django.contrib.auth import get_user_model
from django.db import router
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from shop.auth import token_expired
from shop.db import fetch


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple:  # type: ignore[override]
        sql, user_fields = _lookup()
        using = router.db_for_read(Token)
        rows = fetch(using=using, sql=sql, params=[key])
        if not rows:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        created, *values = rows[0]
        user = get_user_model().from_db(using, user_fields, values)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = Token.from_db(using, ["key", "user_id", "created"], [key, user.pk, created])
        if token_expired(token=token):
            raise exceptions.AuthenticationFailed("Token has expired; log in again for a new one.")
        token.user = user
        return user, token


@cache
def _lookup() -> tuple[str, list[str]]:
    """The statement (token and its user in one row) and the user fields it returns, in order."""
    user_model = get_user_model()
    fields = user_model._meta.concrete_fields
    columns = ", ".join(f'u."{field.column}"' for field in fields)
    sql = (f'SELECT t."created", {columns} FROM "{Token._meta.db_table}" t '
           f'JOIN "{user_model._meta.db_table}" u ON u."{user_model._meta.pk.column}" = t."user_id" '
           'WHERE t."key" = %s')
    return sql, [field.attname for field in fields]
