"""What ORDER_FLOW=2pc needs of its databases, checked before the shop starts in that mode."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from twopc.recovery import participant_aliases


def require_prepared_transactions() -> None:
    """Raise ImproperlyConfigured, in one line that names the setting, unless every participant database allows
    prepared transactions (PostgreSQL's default max_prepared_transactions is 0: PREPARE TRANSACTION fails)."""
    for alias in participant_aliases():
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute("SHOW max_prepared_transactions")
            [(value,)] = cursor.fetchall()
        if int(value) <= 0:
            name = connection.settings_dict["NAME"]
            raise ImproperlyConfigured(
                f"ORDER_FLOW=2pc needs max_prepared_transactions > 0 on every service database, and the server of "
                f"{name!r} ({alias}) has {value}: set max_prepared_transactions (e.g. 100) in its postgresql.conf "
                f"and restart it (the embedded server restarts by itself once no other make run or make test uses it)")
