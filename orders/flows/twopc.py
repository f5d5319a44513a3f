"""ORDER_FLOW=2pc: the order flow as a two-phase commit across the service databases; the request coordinates.

The steps are the order's one declared list (orders/steps.py), run as the atomic flow runs them, but each in its
service's database:

1. Take every step's hold outside any transaction (the card authorization), as the atomic flow does (same keys).
2. Each step's action (a step with a hold: the hold's action) runs in its service's branch: a transaction on
   that service's database, opened when the flow first reaches the service, under a transaction id per order
   and branch (psycopg `tpc_begin`); the order is created first, in the orders branch. Rows are locked in the
   steps' order: the order (new rows only), stock by SKU, the wallet, the shipment. Every connection waits
   at most TWOPC_LOCK_TIMEOUT_MS for a lock; past it the order is 503 `concurrency-conflict`, never a hang.
3. Phase one: PREPARE TRANSACTION on every branch. A business failure before it, or a branch that fails to
   prepare, rolls every branch back (ROLLBACK PREPARED for those already prepared).
4. The commit point: the decision is written and flushed in the coordinator log (twopc.services), on a
   connection of its own, before any branch commits.
5. Phase two: COMMIT PREPARED on every branch; settle the holds (capture the card). A branch that cannot be
   committed now (its database went away) stays prepared and recovery (`manage.py recover_2pc`) commits it from
   the log: the order stands. A coordinator that dies between 3 and 4 leaves prepared branches with no
   decision: recovery rolls them back once they are older than TWOPC_RECOVERY_GRACE_SECONDS (presumed abort).

The branches are Django's own connections of each service's alias, inside an outermost atomic block each (so the
services' `transaction.atomic(savepoint=False)` and `shop.db.fetch` run inside the branch unchanged); psycopg's
two-phase state and Django's block are finished in that order, so Django's commit or rollback at the block's end
finds nothing left to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from orders.flows.atomic import release_holds, request_key, take_holds
from orders.models import Order
from orders.services import PlaceOrder, order_create, order_priced, order_total
from orders.steps import ORDER_STEPS, Data, order_data
from shop.db import retry_on_conflict
from shop.errors import DependencyUnavailable, TransientError, database_unavailable_errors
from shop.routers import service_alias
from shop.steps import Step
from twopc.models import Decision
from twopc.services import GTRID_PREFIX, branch_xid, decision_record

logger = logging.getLogger(__name__)

FLOW = "2pc"
# The order is final when place_order returns: the API answers 201.
SYNCHRONOUS = True


class PrepareFailed(TransientError):
    """A participant could not prepare its branch: every branch was rolled back and nothing was placed."""

    code = "prepare_failed"
    status = 503
    title = "A service could not prepare the order; nothing was placed"


class _Undecided(Exception):
    """Every branch prepared, and the decision may or may not have reached the log: recovery decides."""


def place_order(command: PlaceOrder, *, steps: tuple[Step, ...] = ORDER_STEPS) -> Order:
    command = order_priced(command=command)  # the amount held is the amount the order records
    data = order_data(command=command, amount_cents=order_total(command=command))
    held = take_holds(steps, data, key=request_key(command))
    try:
        # A lock wait past the timeout is answered at once (503 with Retry-After): retrying here would only hold
        # the client for several timeouts behind the same prepared branch.
        order = retry_on_conflict(lambda: _place(command, steps, data), attempts=1)
    except IntegrityError:
        # Another attempt under the same Idempotency-Key placed its order first, with these very holds.
        raise
    except _Undecided as undecided:
        # The holds stay: if the decision was logged, the order stands and they are what it charges.
        raise DependencyUnavailable("The order's outcome is being resolved; retry with the same Idempotency-Key."
                                    ) from undecided.__cause__
    except BaseException:
        release_holds(held, data)
        raise
    for hold in held:
        hold.settle(data=data)
    return order


@dataclass
class _Branch:
    alias: str
    connection: BaseDatabaseWrapper
    prepared: bool = False
    # Its PREPARE failed, which ends the transaction on the server: nothing is left to roll back.
    refused: bool = False


@dataclass
class _Transaction:
    gtrid: str
    branches: dict[str, _Branch] = field(default_factory=dict)

    def branch(self, service: str, blocks: contextlib.ExitStack) -> None:
        """Open the branch of `service`'s database unless it is open (two steps of one service share it)."""
        alias = service_alias(service)
        if alias in self.branches:
            return
        blocks.enter_context(transaction.atomic(using=alias))
        connection = connections[alias]
        self.branches[alias] = _Branch(alias, connection)
        with connection.wrap_database_errors:
            connection.connection.tpc_begin(branch_xid(gtrid=self.gtrid, alias=alias))

    def prepare(self) -> None:
        fault = settings.TWOPC_FAULT
        for branch in self.branches.values():
            try:
                with branch.connection.wrap_database_errors:
                    if fault.startswith("fail-prepare:") and service_alias(fault.split(":", 1)[1]) == branch.alias:
                        # Something PostgreSQL refuses to prepare: the PREPARE below fails for real.
                        branch.connection.connection.execute("LISTEN twopc_fault")
                    branch.connection.connection.tpc_prepare()
            except DatabaseError as exc:
                branch.refused = True
                if isinstance(exc, database_unavailable_errors()):
                    raise  # the database went away: 503 dependency-unavailable
                raise PrepareFailed(f"The {branch.alias} database refused to prepare: {exc}") from exc
            branch.prepared = True

    def rollback(self) -> None:
        """Roll every branch back; one that cannot be reached is dropped (not prepared: its server rolls it back;
        prepared: recovery does, since there is no commit decision)."""
        for branch in self.branches.values():
            if branch.refused:
                # psycopg still counts it as prepared; a fresh connection serves the next request.
                branch.connection.close()
                continue
            try:
                branch.connection.connection.tpc_rollback()
            except Exception:
                logger.warning("2pc %s: rollback of branch %s failed; dropping its connection", self.gtrid,
                               branch.alias, exc_info=True)
                branch.connection.close()

    def commit(self) -> None:
        fault = settings.TWOPC_FAULT
        for branch in self.branches.values():
            try:
                if fault.startswith("lose-branch:") and service_alias(fault.split(":", 1)[1]) == branch.alias:
                    # The branch's connection is gone before its COMMIT PREPARED (its database restarting, say).
                    branch.connection.connection.close()
                branch.connection.connection.tpc_commit()
            except Exception:
                # Decided: the branch stays prepared and recovery commits it.
                logger.warning("2pc %s: commit of branch %s failed; recovery will commit it", self.gtrid,
                               branch.alias, exc_info=True)
                branch.connection.close()

    def abandon(self) -> None:
        """Leave every branch prepared for recovery (the coordinator no longer knows the outcome)."""
        for branch in self.branches.values():
            branch.connection.close()


def _place(command: PlaceOrder, steps: tuple[Step, ...], asked: Data) -> Order:
    tx = _Transaction(gtrid=f"{GTRID_PREFIX}{uuid.uuid4().hex}")
    order: Order | None = None
    with contextlib.ExitStack() as blocks:
        try:
            # The steps without an action are this: the order, created PENDING in the orders service's branch.
            tx.branch("orders", blocks)
            order = order_create(command=command, flow=FLOW)
            data = {"order_id": order.pk, **asked}
            for step in steps:
                action = step.action if step.hold is None else step.hold.action
                if action is not None:
                    tx.branch(step.service, blocks)
                    result = action(data=data, key=f"order:{order.pk}:{step.name}", failure=None, fresh=True)
                    data.update(result or {})
            tx.prepare()
        except BaseException:
            tx.rollback()
            if any(branch.prepared for branch in tx.branches.values()):
                _log_abort(tx, order)
            raise
        _crash_if("crash-after-prepare")
        try:
            decision_record(gtrid=tx.gtrid, decision=Decision.Outcome.COMMIT, branches=list(tx.branches),
                            order_id=order.pk)
        except BaseException as exc:
            tx.abandon()
            raise _Undecided() from exc
        _crash_if("crash-after-decision")
        tx.commit()
    order.status = Order.Status.CONFIRMED
    order.finalized_at = order.updated_at = datetime.fromisoformat(data["confirmed_at"])
    return order


def _log_abort(tx: _Transaction, order: Order | None) -> None:
    # Only for the admin's sake (no decision already means abort), so a failure here changes nothing.
    try:
        decision_record(gtrid=tx.gtrid, decision=Decision.Outcome.ABORT, branches=list(tx.branches),
                        order_id=order.pk if order else None)
    except Exception:
        logger.warning("2pc %s: could not log the abort", tx.gtrid, exc_info=True)


def _crash_if(fault: str) -> None:
    if fault == settings.TWOPC_FAULT:
        logger.error("TWOPC_FAULT=%s: the coordinator dies now", fault)
        os._exit(70)
