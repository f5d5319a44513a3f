"""The order flow in ORDER_FLOW=2pc, end to end through the API, on a database per service: all or nothing
across the four databases, prepared branches resolved by recovery after a coordinator crash, blocking answered
503, never a hang."""

from __future__ import annotations

import functools
import time
import uuid

import psycopg
import pytest
from django.db import connections
from rest_framework.authtoken.models import Token

from inventory.models import Product, Reservation
from operations.audit import run_audit
from orders.models import Order
from payments.models import Payment, Wallet
from shipping.models import Shipment
from shop.testing import all_at_once, order_body
from twopc.models import Decision
from twopc.recovery import in_doubt_branches, recover
from twopc.tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.twopc, pytest.mark.django_db(transaction=True, databases="__all__")]

PARTICIPANTS = ["orders", "inventory", "payments", "shipping"]


@pytest.fixture(autouse=True)
def _twopc(settings):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "2pc"
    settings.TWOPC_FAULT = ""


def _audit_failures() -> list[str]:
    return [check.line() for check in run_audit() if not check.ok]


def _nothing_anywhere(*, sku: str, stock: int, customer_id: int, balance: int) -> None:
    assert Order.objects.count() == 0
    assert Reservation.objects.count() == Payment.objects.count() == Shipment.objects.count() == 0
    assert Product.objects.get(sku=sku).on_hand == stock
    assert Wallet.objects.get(customer_id=customer_id).balance_cents == balance


def test_each_service_writes_its_own_database(make_product, make_customer, client_for):
    make_product(sku="SKU-A", stock=5, price_cents=1250)
    customer = make_customer(balance_cents=10_000)

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 2)]), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "CONFIRMED"
    order_id = body["id"]
    # Each row is in its own service's database and nowhere else.
    assert Order.objects.using("orders").get(pk=order_id).status == Order.Status.CONFIRMED
    assert Reservation.objects.using("inventory").get(order_id=order_id).status == Reservation.Status.HELD
    assert Payment.objects.using("payments").get(order_id=order_id).amount_cents == 2500
    assert Shipment.objects.using("shipping").filter(order_id=order_id).count() == 1
    assert Order.objects.using("default").filter(pk=order_id).count() == 0
    assert Product.objects.get(sku="SKU-A").on_hand == 3
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == 7500
    decision = Decision.objects.get(order_id=order_id)
    assert (decision.decision, sorted(decision.branches)) == ("commit", sorted(PARTICIPANTS))
    assert in_doubt_branches() == []
    assert _audit_failures() == []


@pytest.mark.parametrize(
    ("token", "country", "quantity", "balance", "status", "code"),
    [
        ("tok_ok", "GB", 6, 100_000, 409, "out-of-stock"),
        ("tok_decline", "GB", 1, 100_000, 402, "payment-declined"),
        ("tok_ok", "GB", 1, 999, 402, "insufficient-funds"),
        ("tok_ok", "XX", 1, 100_000, 422, "undeliverable"),
        ("tok_timeout", "GB", 1, 100_000, 503, "payment-unavailable"),
    ],
    ids=["out-of-stock", "declined", "insufficient-funds", "undeliverable", "gateway-down"],
)
def test_a_business_failure_answers_as_atomic_and_rolls_every_branch_back(
        make_product, make_customer, client_for, token, country, quantity, balance, status, code):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=balance)

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", quantity)], token=token,
                                                                      country=country), format="json")

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{code}"
    _nothing_anywhere(sku="SKU-A", stock=5, customer_id=customer.pk, balance=balance)
    assert in_doubt_branches() == []
    assert _audit_failures() == []


@pytest.mark.parametrize("service", PARTICIPANTS)
def test_a_participant_that_fails_to_prepare_aborts_every_branch(make_product, make_customer, client_for, settings,
                                                                 service):
    settings.TWOPC_FAULT = f"fail-prepare:{service}"
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json")

    assert response.status_code == 503, response.content
    assert response.json()["type"] == "/problems/prepare-failed"
    assert response["Retry-After"]
    # The branches prepared before the failing one were rolled back (ROLLBACK PREPARED), the rest never prepared.
    assert in_doubt_branches() == []
    _nothing_anywhere(sku="SKU-A", stock=5, customer_id=customer.pk, balance=10_000)
    assert _audit_failures() == []
    if service != "orders":  # branches before it had prepared: the abort is in the log
        assert Decision.objects.get().decision == "abort"

    settings.TWOPC_FAULT = ""
    again = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json")
    assert again.status_code == 201, again.content


def test_a_repeat_with_the_same_key_is_replayed(make_product, make_customer, client_for):
    make_product(sku="SKU-A", stock=5)
    customer = make_customer()
    client = client_for(customer)
    body = order_body([("SKU-A", 1)])

    first = client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key")
    second = client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="same-key")

    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert Order.objects.count() == 1
    assert Product.objects.get(sku="SKU-A").on_hand == 4


def test_concurrent_orders_on_one_sku_never_oversell(make_product, make_customer, client_for):
    make_product(sku="SKU-HOT", stock=5, price_cents=500)
    customers = [make_customer(balance_cents=100_000) for _ in range(4)]
    clients = [client_for(customers[i % len(customers)]) for i in range(16)]

    responses = all_at_once([
        functools.partial(client.post, "/api/v1/orders", order_body([("SKU-HOT", 1)]), format="json")
        for client in clients
    ])

    statuses = sorted(response.status_code for response in responses)
    # Sold out, or (a lock wait past TWOPC_LOCK_TIMEOUT_MS on a loaded machine) asked to retry; never oversold.
    assert set(statuses) <= {201, 409, 503}, statuses
    assert all(r.json()["type"] == "/problems/concurrency-conflict" for r in responses if r.status_code == 503)
    sold = statuses.count(201)
    assert sold == 5 or (sold < 5 and 503 in statuses), statuses
    assert Product.objects.get(sku="SKU-HOT").on_hand == 5 - sold
    assert Order.objects.filter(status=Order.Status.CONFIRMED).count() == sold
    assert Order.objects.exclude(status=Order.Status.CONFIRMED).count() == 0
    assert _audit_failures() == []


def _hold_stock_row(sku: str) -> psycopg.Connection:
    """Another transaction on the inventory database holding the product's row lock."""
    params = connections["inventory"].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("server_side_binding", None)
    holder = psycopg.connect(**params)
    holder.execute("SELECT 1 FROM inventory_product WHERE sku = %s FOR UPDATE", [sku])
    return holder


def test_a_lock_held_past_the_timeout_is_a_503_not_a_hang(make_product, make_customer, client_for, settings):
    make_product(sku="SKU-A", stock=5)
    customer = make_customer(balance_cents=10_000)
    holder = _hold_stock_row("SKU-A")
    try:
        started = time.monotonic()
        response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json")
        waited = time.monotonic() - started
    finally:
        holder.close()

    assert response.status_code == 503, response.content
    assert response.json()["type"] == "/problems/concurrency-conflict"
    assert response["Retry-After"]
    assert settings.TWOPC_LOCK_TIMEOUT_MS / 1000 <= waited < settings.TWOPC_LOCK_TIMEOUT_MS / 1000 + 10
    assert in_doubt_branches() == []
    _nothing_anywhere(sku="SKU-A", stock=5, customer_id=customer.pk, balance=10_000)


def _crash(web, customer, *, fault: str, key: str) -> None:
    web.start(TWOPC_FAULT=fault, IDEMPOTENCY_LOCK_SECONDS="1")
    token, _ = Token.objects.get_or_create(user=customer)
    status = web.post("/api/v1/orders", order_body([("SKU-A", 2)]), token=token.key, key=key)
    assert status == 0, f"the coordinator answered {status} instead of dying\n{web.logs()}"
    web.stop()


def test_a_coordinator_dead_before_its_decision_is_rolled_back(make_product, make_customer, client_for, web,
                                                               settings):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)
    _crash(web, customer, fault="crash-after-prepare", key="crashed-1")

    branches = in_doubt_branches()
    assert sorted(branch.alias for branch in branches) == sorted(PARTICIPANTS)
    assert {branch.decision for branch in branches} == {None}
    # Prepared, not committed: nothing is visible, and the branch holds the stock row it locked. Another order of
    # that SKU is told to retry instead of waiting for whoever resolves the branch.
    assert Order.objects.count() == 0
    other = make_customer(balance_cents=10_000)
    blocked = client_for(other).post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json")
    assert blocked.status_code == 503 and blocked.json()["type"] == "/problems/concurrency-conflict"
    settings.TWOPC_MAX_PREPARED_AGE_SECONDS = 0.0
    assert any(line.startswith("I7") for line in _audit_failures())

    # Younger than the grace period: maybe a live coordinator between its prepares and its decision.
    assert {r.action for r in recover(grace_seconds=3600)} == {"wait"}
    resolutions = recover(grace_seconds=0)

    assert sorted((r.branch.alias, r.action) for r in resolutions) == [(a, "rollback") for a in sorted(PARTICIPANTS)]
    assert in_doubt_branches() == []
    _nothing_anywhere(sku="SKU-A", stock=5, customer_id=customer.pk, balance=10_000)
    assert _audit_failures() == []
    # The dead attempt placed nothing: the same key places the order now.
    time.sleep(1.1)  # the dead attempt's lease on the key
    retry = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 2)]), format="json",
                                      HTTP_IDEMPOTENCY_KEY="crashed-1")
    assert retry.status_code == 201, retry.content


def test_a_coordinator_dead_after_its_decision_is_committed(make_product, make_customer, client_for, web, settings):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)
    _crash(web, customer, fault="crash-after-decision", key="crashed-2")

    branches = in_doubt_branches()
    assert sorted(branch.alias for branch in branches) == sorted(PARTICIPANTS)
    assert {branch.decision for branch in branches} == {"commit"}
    assert Order.objects.count() == 0

    resolutions = recover(grace_seconds=0)

    assert sorted((r.branch.alias, r.action) for r in resolutions) == [(a, "commit") for a in sorted(PARTICIPANTS)]
    assert in_doubt_branches() == []
    order = Order.objects.get()
    assert order.status == Order.Status.CONFIRMED
    assert Reservation.objects.get(order_id=order.pk).status == Reservation.Status.HELD
    assert Payment.objects.get(order_id=order.pk).amount_cents == 2000
    assert Shipment.objects.filter(order_id=order.pk).count() == 1
    assert Product.objects.get(sku="SKU-A").on_hand == 3
    assert Wallet.objects.get(customer_id=customer.pk).balance_cents == 8000
    assert _audit_failures() == []
    # The client's retry finds the order the dead attempt placed.
    time.sleep(1.1)
    retry = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 2)]), format="json",
                                      HTTP_IDEMPOTENCY_KEY="crashed-2")
    assert retry.status_code == 201, retry.content
    assert retry.json()["id"] == order.pk
    assert Order.objects.count() == 1


def test_the_recovery_process_resolves_branches_by_itself(make_product, make_customer, web, tmp_path):
    import subprocess
    import sys

    from shop.testing import wait_until

    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)
    _crash(web, customer, fault="crash-after-prepare", key=uuid.uuid4().hex)
    assert in_doubt_branches()
    env = {**web.env, "TWOPC_RECOVERY_GRACE_SECONDS": "0.5", "TWOPC_RECOVERY_INTERVAL_SECONDS": "0.2"}
    log = open(tmp_path / "recovery.log", "wb")  # noqa: SIM115
    recovery = subprocess.Popen([sys.executable, "manage.py", "recover_2pc"], cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: not in_doubt_branches(), timeout=60, interval=0.2), \
            (tmp_path / "recovery.log").read_text()
    finally:
        recovery.terminate()
        recovery.wait(20)
        log.close()
    assert recovery.returncode == 0
    resolved = [line for line in (tmp_path / "recovery.log").read_text().splitlines() if line.startswith("rollback")]
    assert len(resolved) == 4, resolved
    _nothing_anywhere(sku="SKU-A", stock=5, customer_id=customer.pk, balance=10_000)



def test_the_admin_lists_in_doubt_branches_and_resolves_one(make_product, make_customer, web, admin_client):
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)
    _crash(web, customer, fault="crash-after-decision", key=uuid.uuid4().hex)
    [branch, *others] = sorted(in_doubt_branches(), key=lambda b: b.alias)

    page = admin_client.get("/admin/twopc/decision/in-doubt/")
    assert page.status_code == 200
    assert page.content.decode().count(branch.gtrid) == 2 * (1 + len(others))  # a cell and a form field each
    log = admin_client.get("/admin/twopc/decision/")
    assert branch.gtrid in log.content.decode() and "In-doubt branches" in log.content.decode()

    resolved = admin_client.post("/admin/twopc/decision/in-doubt/", {"alias": branch.alias, "gtrid": branch.gtrid})

    assert resolved.status_code == 302
    assert sorted(b.alias for b in in_doubt_branches()) == [b.alias for b in others]
    recover(grace_seconds=0)
    assert Order.objects.get().status == Order.Status.CONFIRMED


def test_recovery_forgets_old_decisions_but_not_recent_ones(make_product, make_customer, client_for):
    from datetime import timedelta

    from django.utils import timezone

    make_product(sku="SKU-A", stock=5)
    customer = make_customer()
    for _ in range(2):
        assert client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json").status_code == 201
    old, recent = Decision.objects.order_by("decided_at")
    Decision.objects.filter(pk=old.pk).update(decided_at=timezone.now() - timedelta(hours=25))

    recover()

    assert list(Decision.objects.values_list("gtrid", flat=True)) == [recent.gtrid]


def test_the_2pc_flow_runs_an_added_step(make_product, make_customer, settings):
    """The step list with one step more (sagas/tests/receipt.py): it runs in the payments branch, committed with
    the others, and rolled back with them when a later step fails."""
    from django.conf import settings as django_settings

    from orders.flows import twopc
    from orders.services import PlaceOrder
    from sagas.tests import receipt
    from shop.errors import Undeliverable
    from shop.testing import ADDRESS

    for alias in django_settings.DATABASES:
        receipt.table_create(alias)
    try:
        make_product(sku="SKU-A", stock=5, price_cents=1000)
        customer = make_customer(balance_cents=100_000)

        def command(country: str) -> PlaceOrder:
            return PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                              shipping_address={**ADDRESS, "country": country})

        confirmed = twopc.place_order(command("GB"), steps=receipt.STEPS)
        with pytest.raises(Undeliverable):
            twopc.place_order(command("XX"), steps=receipt.STEPS)

        reference = Payment.objects.get(order_id=confirmed.pk).gateway_reference
        assert receipt.receipts(confirmed.pk) == [(reference, "sent")]
        assert Order.objects.count() == 1  # the failed order rolled back on every database, its receipt too
        assert in_doubt_branches() == []
    finally:
        for alias in django_settings.DATABASES:
            receipt.table_drop(alias)


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR")  # the embedded server's package, finding no runtime dir
def test_prepared_branches_outlive_a_postgresql_restart_and_recovery_commits_them(make_product, make_customer,
                                                                                  web):
    from runtime import embedded

    if embedded.running_database_url() is None:
        pytest.skip("restarts the embedded PostgreSQL; this run uses a server of its own")
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)
    _crash(web, customer, fault="crash-after-decision", key=uuid.uuid4().hex)
    assert len(in_doubt_branches()) == len(PARTICIPANTS)

    connections.close_all()
    # In a process of its own, as an operator would restart it (and so the server's handle is not this one's).
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "from runtime import embedded; embedded.stop_postgres(); "
                    "embedded.start_postgres()"], cwd=REPO_ROOT, check=True, timeout=120, capture_output=True)

    # PREPARE TRANSACTION wrote each branch to disk: the restart kept them, with their locks, and the decision.
    branches = in_doubt_branches()
    assert sorted(b.alias for b in branches) == sorted(PARTICIPANTS)
    assert {b.decision for b in branches} == {"commit"}
    recover(grace_seconds=0)
    assert in_doubt_branches() == []
    assert Order.objects.get().status == Order.Status.CONFIRMED
    assert _audit_failures() == []


def test_a_decision_log_connection_that_died_is_replaced(make_product, make_customer, client_for):
    from twopc import services

    make_product(sku="SKU-A", stock=5)
    customer = make_customer()
    client = client_for(customer)
    assert client.post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json").status_code == 201
    log_pid = services._log.connection.connection.info.backend_pid
    with connections["orders"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [log_pid])

    response = client.post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json")

    assert response.status_code == 201, response.content
    assert services._log.connection.connection.info.backend_pid != log_pid
    assert Decision.objects.filter(decision="commit").count() == 2
    assert in_doubt_branches() == []


def test_a_branch_lost_after_the_decision_is_committed_by_recovery(make_product, make_customer, client_for,
                                                                   settings):
    settings.TWOPC_FAULT = "lose-branch:inventory"
    make_product(sku="SKU-A", stock=5, price_cents=1000)
    customer = make_customer(balance_cents=10_000)

    response = client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 2)]), format="json")

    # Decided: the order stands, and its answer says so, though one database has not committed its part yet.
    assert response.status_code == 201, response.content
    order_id = response.json()["id"]
    [branch] = in_doubt_branches()
    assert (branch.alias, branch.decision) == ("inventory", "commit")
    assert Reservation.objects.filter(order_id=order_id).count() == 0
    assert any("lacks reservation" in line for line in _audit_failures())

    recover(grace_seconds=0)

    assert in_doubt_branches() == []
    assert Reservation.objects.get(order_id=order_id).status == Reservation.Status.HELD
    assert Product.objects.get(sku="SKU-A").on_hand == 3
    assert _audit_failures() == []
    settings.TWOPC_FAULT = ""
    # The lost connection was dropped: the next order gets a fresh one.
    assert client_for(customer).post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json").status_code == 201
