from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from inventory.models import Product
from operations.audit import run_audit
from orders.flows import place_order
from orders.models import Order
from orders.services import PlaceOrder
from payments.models import Payment, Wallet
from shop.testing import ADDRESS

pytestmark = pytest.mark.django_db


def _failed() -> list[str]:
    return [check.name for check in run_audit() if not check.ok]


@pytest.fixture
def placed(make_product, make_customer):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=5)
    customer = make_customer()
    order = place_order(PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 2)], payment_token="tok_ok",
                                   shipping_address=ADDRESS))
    assert _failed() == []
    return order


def test_audit_catches_created_stock(placed):
    Product.objects.filter(sku="SKU-A").update(on_hand=4)
    assert _failed() == ["I2 stock"]


def test_audit_catches_money_from_nowhere(placed):
    Wallet.objects.update(balance_cents=10**9)
    assert _failed() == ["I1 money"]


def test_audit_catches_a_failed_order_still_charged(placed):
    Order.objects.filter(pk=placed.pk).update(status=Order.Status.FAILED)
    assert set(_failed()) == {"I1 money", "I2 stock"}


def test_audit_catches_an_order_paid_by_someone_else(placed, make_customer):
    other = make_customer()
    Payment.objects.filter(order_id=placed.pk).update(customer_id=other.pk)
    assert "I6 access" in _failed()


def test_audit_command_exits_non_zero_on_violation(placed, capsys):
    call_command("audit")
    assert "I1 money" in capsys.readouterr().out
    Product.objects.filter(sku="SKU-A").update(on_hand=0)
    with pytest.raises(CommandError):
        call_command("audit")


def test_seed_creates_the_contract_and_resets(placed):
    call_command("seed", customers=3, products=4, stock=7, balance_cents=500, password="pw")
    users = get_user_model().objects.filter(username__startswith="customer").order_by("username")
    assert [u.username for u in users] == ["customer1", "customer2", "customer3"]
    assert users[0].check_password("pw")
    assert sorted(Product.objects.values_list("sku", "on_hand")) == [(f"SKU-000{i}", 7) for i in range(1, 5)]
    assert set(Wallet.objects.values_list("balance_cents", flat=True)) == {500}
    assert list(Order.objects.values_list("pk", "status")) == []
    call_command("seed", customers=2, products=2, stock=3)
    assert get_user_model().objects.filter(username__startswith="customer").count() == 2
    assert sorted(Product.objects.values_list("sku", "on_hand")) == [("SKU-0001", 3), ("SKU-0002", 3)]
    assert _failed() == []


def test_unknown_order_flow_is_refused_at_start_up():
    env = {**os.environ, "ORDER_FLOW": "bogus"}
    result = subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True)
    assert result.returncode != 0, result
    assert "ORDER_FLOW='bogus' is not one of atomic, saga" in result.stderr, result.stderr
