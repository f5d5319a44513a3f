"""Recovery of in-doubt branches: prepared transactions whose coordinator did not finish phase two.

For every participant database, `pg_prepared_xacts` lists the shop's prepared branches (format id FORMAT_ID, in
that database); the coordinator log says what was decided for each global transaction. A commit decision is
carried out with COMMIT PREPARED. An abort decision, or none at all once the branch is older than
TWOPC_RECOVERY_GRACE_SECONDS (presumed abort: a coordinator logs its commit before it commits any branch, so a
branch with no decision was never committed anywhere), is ROLLBACK PREPARED. A younger branch with no decision
may belong to a coordinator still between its prepares and its decision: it is left for the next round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone
from psycopg import Xid
from psycopg import errors as pg_errors

from shop.env import SERVICES
from shop.routers import service_alias
from twopc.models import Decision
from twopc.services import FORMAT_ID, decisions_purge

logger = logging.getLogger("twopc.recovery")

# A branch whose commit is decided is left this long to its own coordinator, which is committing it right now.
COMMIT_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class Branch:
    alias: str
    xid: Xid
    prepared_at: datetime
    decision: str | None  # "commit", "abort" or None (no decision: presumed abort)

    @property
    def gtrid(self) -> str:
        return self.xid.gtrid

    @property
    def age_seconds(self) -> float:
        return (timezone.now() - self.prepared_at).total_seconds()


@dataclass(frozen=True)
class Resolution:
    branch: Branch
    action: str  # "commit", "rollback", "wait" or "gone" (resolved meanwhile by someone else)

    def line(self) -> str:
        decision = self.branch.decision or "none (presumed abort)"
        return (f"{self.action:<8} {self.branch.gtrid} branch {self.branch.alias} prepared "
                f"{self.branch.age_seconds:.1f} s ago, decision {decision}")


def participant_aliases() -> list[str]:
    """The distinct databases the flow's branches run on."""
    return list(dict.fromkeys(service_alias(service) for service in SERVICES))


def in_doubt_branches(*, aliases: list[str] | None = None) -> list[Branch]:
    """The shop's prepared branches on each participant database, with the coordinator log's decision."""
    found: list[tuple[str, Xid, datetime]] = []
    for alias in aliases or participant_aliases():
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT gid, prepared FROM pg_prepared_xacts WHERE database = current_database()")
            for gid, prepared_at in cursor.fetchall():
                xid = Xid.from_string(gid)
                if xid.format_id == FORMAT_ID and xid.bqual == alias:
                    found.append((alias, xid, prepared_at))
    decisions = dict(Decision.objects.filter(gtrid__in={xid.gtrid for _, xid, _ in found})
                     .values_list("gtrid", "decision"))
    return [Branch(alias, xid, prepared_at, decisions.get(xid.gtrid)) for alias, xid, prepared_at in found]


def resolve_branch(branch: Branch, *, grace_seconds: float) -> Resolution:
    """Carry out the log's decision for one branch (see the module's docstring)."""
    if branch.decision == Decision.Outcome.COMMIT:
        action = "commit" if branch.age_seconds >= min(grace_seconds, COMMIT_GRACE_SECONDS) else "wait"
    elif branch.decision == Decision.Outcome.ABORT or branch.age_seconds >= grace_seconds:
        action = "rollback"
    else:
        action = "wait"
    if action == "wait":
        return Resolution(branch, action)
    connection = connections[branch.alias]
    connection.ensure_connection()
    try:
        with connection.wrap_database_errors:
            if action == "commit":
                connection.connection.tpc_commit(branch.xid)
            else:
                connection.connection.tpc_rollback(branch.xid)
    except Exception as exc:
        if isinstance(exc.__cause__, pg_errors.UndefinedObject):
            return Resolution(branch, "gone")  # its coordinator, or another recovery, finished it meanwhile
        raise
    return Resolution(branch, action)


def recover(*, grace_seconds: float | None = None) -> list[Resolution]:
    """One round over every participant; logs and returns what it did (waiting branches included)."""
    grace = settings.TWOPC_RECOVERY_GRACE_SECONDS if grace_seconds is None else grace_seconds
    resolutions = [resolve_branch(branch, grace_seconds=grace) for branch in in_doubt_branches()]
    # Purged only now, with no branch of theirs left that this round saw prepared.
    decisions_purge(older_than=timedelta(hours=settings.TWOPC_LOG_RETENTION_HOURS),
                    keep={r.branch.gtrid for r in resolutions if r.action == "wait"})
    for resolution in resolutions:
        if resolution.action in ("commit", "rollback"):
            logger.warning("2pc recovery: %s", resolution.line())
    return resolutions


def prepared_older_than(*, seconds: float) -> list[Branch]:
    """Audit I7: the shop's branches still prepared after `seconds`."""
    limit = timezone.now() - timedelta(seconds=seconds)
    return [branch for branch in in_doubt_branches() if branch.prepared_at < limit]
