"""The consistency audit of DESIGN.md section 8, read from every service through its `selectors.py` only.

Each check returns one line: the invariant, whether it holds, and what it counted or the first
violations it found. `manage.py audit` prints them and fails if any does not hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model

from inventory.selectors import reservations_held, stock_totals
from orders.choreography import ORDER_CHOREOGRAPHY
from orders.selectors import OrderStatus, OrderSummary, order_summary_list
from payments.selectors import PaymentStatus, money_totals, payments_by_order
from sagas.choreography import DONE, UNDONE
from sagas.selectors import (
    SAGA_ACTIVE_STATES,
    SagaState,
    flows_with_events,
    outbox_stats,
    saga_counts,
    saga_states_by_key,
    sagas_overdue,
)
from shipping.selectors import ShipmentStatus, shipments_by_order
from twopc.recovery import prepared_older_than

MAX_EXAMPLES = 5
# A committed message still unpublished after this long means the relay is down or stuck.
OUTBOX_LAG_LIMIT_SECONDS = 60


@dataclass
class Check:
    name: str
    summary: str = ""
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        if self.ok:
            return f"{self.name:<14} OK    {self.summary}"
        shown = "; ".join(self.violations[:MAX_EXAMPLES])
        more = f" (+{len(self.violations) - MAX_EXAMPLES} more)" if len(self.violations) > MAX_EXAMPLES else ""
        return f"{self.name:<14} FAIL  {len(self.violations)} violation(s): {shown}{more}"


@dataclass
class Facts:
    """What several checks read, read once."""

    orders: dict[int, OrderSummary]
    payments: dict[int, tuple[str, int, int]]

    @classmethod
    def read(cls) -> Facts:
        return cls(orders={order.id: order for order in order_summary_list()}, payments=payments_by_order())


def check_money(facts: Facts) -> Check:
    check = Check("I1 money")
    orders, payments = facts.orders, facts.payments
    for order_id, order in orders.items():
        payment = payments.get(order_id)
        if order.status == OrderStatus.CONFIRMED:
            if payment is None or payment[0] != PaymentStatus.CHARGED:
                check.violations.append(f"confirmed order {order_id} is not charged")
            elif payment[1] != order.total_cents:
                check.violations.append(f"order {order_id} charged {payment[1]}, total is {order.total_cents}")
        elif order.status == OrderStatus.FAILED and payment and payment[0] == PaymentStatus.CHARGED:
            check.violations.append(f"failed order {order_id} is still charged {payment[1]}")
    for order_id in payments.keys() - orders.keys():
        if payments[order_id][0] == PaymentStatus.CHARGED:
            check.violations.append(f"payment for unknown order {order_id} is charged")
    totals = money_totals()
    if totals["balance"] + totals["charged"] != totals["deposited"]:
        check.violations.append(
            f"wallets {totals['balance']} + net charges {totals['charged']} != money put in {totals['deposited']}"
        )
    check.summary = (f"{len(payments)} payments; wallets {totals['balance']} + net charges {totals['charged']}"
                     f" = put in {totals['deposited']}")
    return check


def check_stock(facts: Facts) -> Check:
    check = Check("I2 stock")
    orders = facts.orders
    totals = stock_totals()
    for sku, t in sorted(totals.items()):
        if t["on_hand"] < 0:
            check.violations.append(f"{sku} on hand is {t['on_hand']}")
        if t["received"] != t["on_hand"] + t["held"]:
            check.violations.append(f"{sku}: received {t['received']} != on hand {t['on_hand']} + held {t['held']}")
    held = reservations_held()
    shipments = shipments_by_order()
    for order_id, order in orders.items():
        lines = list(order.lines)
        reservation = held.get(order_id)
        if order.status == OrderStatus.CONFIRMED:
            if reservation is None or sorted((x["sku"], x["quantity"]) for x in reservation) != lines:
                check.violations.append(f"confirmed order {order_id} does not hold exactly its lines")
            if shipments.get(order_id) != ShipmentStatus.SCHEDULED:
                check.violations.append(f"confirmed order {order_id} has no scheduled shipment")
        elif order.status == OrderStatus.FAILED:
            if reservation is not None:
                check.violations.append(f"failed order {order_id} still holds stock")
            if shipments.get(order_id) == ShipmentStatus.SCHEDULED:
                check.violations.append(f"failed order {order_id} still has a scheduled shipment")
    for order_id in held.keys() - orders.keys():
        check.violations.append(f"reservation for unknown order {order_id} holds stock")
    on_hand = sum(t["on_hand"] for t in totals.values())
    held_units = sum(t["held"] for t in totals.values())
    check.summary = f"{len(totals)} SKUs; on hand {on_hand} + held {held_units} = received {on_hand + held_units}"
    return check


def check_access(facts: Facts) -> Check:
    check = Check("I6 access")
    user_ids = set(get_user_model().objects.values_list("pk", flat=True))
    orders, payments = facts.orders, facts.payments
    for order_id, order in orders.items():
        if order.customer_id not in user_ids:
            check.violations.append(f"order {order_id} belongs to unknown customer {order.customer_id}")
        payment = payments.get(order_id)
        if payment is not None and payment[2] != order.customer_id:
            check.violations.append(f"order {order_id} of customer {order.customer_id} paid by {payment[2]}")
    check.summary = f"{len(orders)} orders, each owned by an existing customer and paid from their wallet"
    return check


def check_sagas(facts: Facts) -> Check:
    check = Check("I3 saga")
    expected = {OrderStatus.CONFIRMED: {SagaState.COMPLETED}, OrderStatus.FAILED: {SagaState.COMPENSATED},
                OrderStatus.PENDING: SAGA_ACTIVE_STATES}
    states = saga_states_by_key(saga_type="order", key="order_id")
    orders = facts.orders
    for saga in sagas_overdue():
        check.violations.append(f"saga {saga.pk} is {saga.state} past its deadline or parked")
    for order_id, order in orders.items():
        if order.flow != "saga":
            continue
        state = states.get(order_id)
        if state not in expected[order.status]:
            check.violations.append(f"order {order_id} is {order.status} but its saga is {state}")
    counts = saga_counts()
    check.summary = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n) or "no sagas"
    return check


def check_outbox(facts: Facts) -> Check:
    check = Check("I5 outbox")
    stats = outbox_stats()
    if stats["pending"] and stats["oldest_pending_age_seconds"] > OUTBOX_LAG_LIMIT_SECONDS:
        check.violations.append(
            f"{stats['pending']} message(s) unpublished, oldest {stats['oldest_pending_age_seconds']:.0f} s old"
        )
    check.summary = f"{stats['pending']} pending, oldest {stats['oldest_pending_age_seconds']:.1f} s"
    return check


def check_two_phase(facts: Facts) -> Check:
    check = Check("I7 two-phase")
    bound = settings.TWOPC_MAX_PREPARED_AGE_SECONDS
    for branch in prepared_older_than(seconds=bound):
        check.violations.append(f"branch {branch.alias} of {branch.gtrid} prepared {branch.age_seconds:.0f} s ago "
                                f"(decision {branch.decision or 'none'}): is recovery running?")
    orders, payments = facts.orders, facts.payments
    held, shipments = reservations_held(), shipments_by_order()
    two_phase = 0
    for order_id, order in orders.items():
        if order.flow != "2pc":
            continue
        two_phase += 1
        # Every database commits the order's branch or none does: the order exists only CONFIRMED, with its part
        # in each of the other databases.
        parts = {"order": order.status == OrderStatus.CONFIRMED,
                 "payment": payments.get(order_id, ("",))[0] == PaymentStatus.CHARGED,
                 "reservation": order_id in held, "shipment": shipments.get(order_id) == ShipmentStatus.SCHEDULED}
        if not all(parts.values()):
            check.violations.append(f"2pc order {order_id} ({order.status}) lacks "
                                    + ", ".join(name for name, present in parts.items() if not present))
    for name, order_ids in (("payment", payments.keys()), ("reservation", held.keys()),
                            ("shipment", {i for i, status in shipments.items() if status == ShipmentStatus.SCHEDULED})):
        for order_id in sorted(order_ids - orders.keys()):
            check.violations.append(f"{name} of order {order_id}, which the orders database does not have")
    check.summary = f"{two_phase} 2pc orders agree on every database; no branch prepared longer than {bound:.0f} s"
    return check


def check_choreography(facts: Facts) -> Check:
    """I8: a choreographed order is final exactly when its chain says so: CONFIRMED with OrderConfirmed
    emitted, FAILED with OrderFailed emitted (after the undo chain), and neither while PENDING."""
    check = Check("I8 choreography")
    done = ORDER_CHOREOGRAPHY.event(len(ORDER_CHOREOGRAPHY.steps) - 1, DONE)
    failed = ORDER_CHOREOGRAPHY.event(0, UNDONE)
    expected = {OrderStatus.CONFIRMED: {done}, OrderStatus.FAILED: {failed}, OrderStatus.PENDING: set()}
    emitted = flows_with_events(flow=ORDER_CHOREOGRAPHY.name, events=(done, failed))
    orders = [order for order in facts.orders.values() if order.flow == "choreography"]
    for order in orders:
        seen = emitted.get(str(order.id), set())
        if seen != expected[order.status]:
            shown = ", ".join(sorted(seen)) or "neither"
            check.violations.append(f"order {order.id} is {order.status} but its chain emitted {shown} "
                                    f"(of {done}, {failed})")
    pending = sum(order.status == OrderStatus.PENDING for order in orders)
    check.summary = f"{len(orders)} choreographed orders, {pending} in flight" if orders else "no choreographed orders"
    return check


CHECKS: list[Callable[[Facts], Check]] = [check_money, check_stock, check_sagas, check_outbox,
                                                     check_access, check_two_phase, check_choreography]


def run_audit() -> list[Check]:
    facts = Facts.read()
    return [check(facts) for check in CHECKS]
