"""Stock moves: one statement per reservation, all lines or none, rows locked in SKU order."""

from __future__ import annotations

import functools

import pytest
from django.db import transaction

from inventory.models import Product, Reservation
from inventory.services import stock_release, stock_reserve
from shop.errors import OutOfStock
from shop.testing import all_at_once

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_reservation_moves_every_line_and_records_them_sorted(make_product):
    make_product(sku="SKU-A", stock=5)
    make_product(sku="SKU-B", stock=5)

    reservation = stock_reserve(order_id=1, key="order:1:reserve", lines=[("SKU-B", 2), ("SKU-A", 3)])

    stored = Reservation.objects.get(key="order:1:reserve")
    assert (stored.pk, stored.order_id, stored.status) == (reservation.pk, 1, Reservation.Status.HELD)
    assert stored.lines == reservation.lines == [{"sku": "SKU-A", "quantity": 3}, {"sku": "SKU-B", "quantity": 2}]
    assert dict(Product.objects.values_list("sku", "on_hand")) == {"SKU-A": 2, "SKU-B": 3}
    assert stock_reserve(order_id=1, key="order:1:reserve", lines=[("SKU-B", 2), ("SKU-A", 3)]).pk == stored.pk
    assert dict(Product.objects.values_list("sku", "on_hand")) == {"SKU-A": 2, "SKU-B": 3}


@pytest.mark.parametrize("short", ["SKU-A", "SKU-B"])
def test_one_short_line_moves_no_line_and_names_the_sku(make_product, short):
    make_product(sku="SKU-A", stock=1 if short == "SKU-A" else 5)
    make_product(sku="SKU-B", stock=1 if short == "SKU-B" else 5)

    with pytest.raises(OutOfStock) as raised:
        stock_reserve(order_id=1, key="order:1:reserve", lines=[("SKU-B", 2), ("SKU-A", 2)])

    assert raised.value.extra["sku"] == short
    assert Reservation.objects.count() == 0
    expected = {"SKU-A": 5, "SKU-B": 5, short: 1}
    assert dict(Product.objects.values_list("sku", "on_hand")) == expected


def test_an_unknown_sku_is_out_of_stock_and_moves_nothing(make_product):
    make_product(sku="SKU-A", stock=5)

    with pytest.raises(OutOfStock) as raised:
        stock_reserve(order_id=1, key="order:1:reserve", lines=[("SKU-A", 1), ("SKU-Z", 1)])

    assert raised.value.extra["sku"] == "SKU-Z"
    assert Product.objects.get(sku="SKU-A").on_hand == 5


def test_a_release_gives_back_exactly_what_was_held_once(make_product):
    make_product(sku="SKU-A", stock=5)
    stock_reserve(order_id=1, key="order:1:reserve", lines=[("SKU-A", 4)])

    stock_release(key="order:1:reserve")
    stock_release(key="order:1:reserve")

    assert Product.objects.get(sku="SKU-A").on_hand == 5
    assert Reservation.objects.get(key="order:1:reserve").status == Reservation.Status.RELEASED


def test_opposite_line_orders_never_deadlock(make_product):
    # Each transaction holds its product rows until it ends; the sleep widens the window in which two of them
    # would each hold one row and wait for the other's, were rows not locked in SKU order.
    make_product(sku="SKU-A", stock=1000)
    make_product(sku="SKU-B", stock=1000)
    make_product(sku="SKU-C", stock=1000)
    orders = [[("SKU-A", 1), ("SKU-B", 1), ("SKU-C", 1)], [("SKU-C", 1), ("SKU-B", 1), ("SKU-A", 1)]]

    def reserve(order_id: int) -> None:
        from django.db import connection

        with transaction.atomic():
            stock_reserve(order_id=order_id, key=f"order:{order_id}:reserve", lines=orders[order_id % 2],
                          key_is_new=True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.02)")

    results = all_at_once([functools.partial(reserve, order_id) for order_id in range(24)])

    assert [result for result in results if result is not None] == []
    assert dict(Product.objects.values_list("sku", "on_hand")) == {"SKU-A": 976, "SKU-B": 976, "SKU-C": 976}
    assert Reservation.objects.count() == 24
