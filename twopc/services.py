"""Writes of the coordinator log, and the branch identifiers every participant's transaction is prepared under."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from datetime import timedelta

from django.db import IntegrityError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from psycopg import Xid

from shop.errors import database_unavailable_errors
from shop.routers import service_alias
from twopc.models import Decision

# The XA format id of the shop's branches ("SH"): recovery touches no prepared transaction of anyone else.
FORMAT_ID = 0x5348
GTRID_PREFIX = "order-"


def branch_xid(*, gtrid: str, alias: str) -> Xid:
    """The id a branch is prepared under: the global transaction and, as branch qualifier, the database alias."""
    return Xid.from_parts(FORMAT_ID, gtrid, alias)


_log = threading.local()


def _log_connection() -> BaseDatabaseWrapper:
    """A connection of this thread to the orders database, beside Django's own: that one holds the orders
    branch, and the decision must commit on its own, before any branch does."""
    connection = getattr(_log, "connection", None)
    if connection is None or connection.connection is None:
        connection = _log.connection = connections.create_connection(service_alias("orders"))
    return connection


def decision_log_close() -> None:
    connection = getattr(_log, "connection", None)
    _log.connection = None
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()


# One statement in autocommit: its implicit transaction is the decision's, and `set_config(..., true)` makes that
# transaction's commit wait for the WAL flush even on a server whose default does not (the referenced CTE is
# what evaluates it).
_DECIDE_SQL = f"""
WITH durable AS (SELECT set_config('synchronous_commit', 'on', true))
INSERT INTO {Decision._meta.db_table} (gtrid, decision, branches, order_id, decided_at)
SELECT %(gtrid)s, %(decision)s, %(branches)s::jsonb, %(order_id)s, statement_timestamp() FROM durable
"""


def decision_record(*, gtrid: str, decision: str, branches: Sequence[str], order_id: int | None) -> None:
    """Log `decision` for `gtrid`, durably: its own transaction, committed with a synchronous WAL flush whatever
    the server's default, on a connection of its own. Once this returns, recovery carries the decision out; a
    second decision for the same transaction is refused (IntegrityError)."""
    params = {"gtrid": gtrid, "decision": decision, "branches": json.dumps(list(branches)), "order_id": order_id}
    for attempt in (1, 2):
        connection = _log_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute(_DECIDE_SQL, params)
            return
        except IntegrityError:
            decision_log_close()
            if attempt == 1:
                raise
            return  # the first attempt did commit: the decision is in the log
        except database_unavailable_errors():
            # A connection found dead (the server restarted since it was last used) is replaced once: the
            # insert is keyed by the transaction id, so if the first attempt did commit, the second says so.
            decision_log_close()
            if attempt == 2:
                raise
        except BaseException:
            decision_log_close()
            raise


def decisions_purge(*, older_than: timedelta, keep: set[str]) -> int:
    """Forget decisions older than `older_than` except those of global transactions in `keep` (still in doubt
    somewhere): once every branch is finished nobody asks again, and with presumed abort a forgotten commit
    could only matter to a branch still prepared."""
    cutoff = timezone.now() - older_than
    deleted, _ = Decision.objects.filter(decided_at__lt=cutoff).exclude(gtrid__in=keep).delete()
    return deleted


def decisions_reset() -> None:
    Decision.objects.all().delete()
