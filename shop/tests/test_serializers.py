"""Input serializers whose fields are built once per thread answer exactly as DRF's own would."""

from __future__ import annotations

import functools

import pytest
from rest_framework import serializers

from shop.serializers import FieldsBuiltOnce
from shop.testing import all_at_once


def _declare(base: type) -> type:
    class Item(base):  # type: ignore[misc, valid-type]
        sku = serializers.CharField(max_length=8)
        quantity = serializers.IntegerField(min_value=1, max_value=5)

    class Address(base):  # type: ignore[misc, valid-type]
        country = serializers.RegexField(r"^[A-Z]{2}$")

    class Order(base):  # type: ignore[misc, valid-type]
        items = Item(many=True, allow_empty=False)
        address = Address()
        note = serializers.CharField(required=False)

        def validate_note(self, value: str) -> str:
            if value == "no":
                raise serializers.ValidationError("not that note")
            return value

    return Order


REUSED, PLAIN = _declare(FieldsBuiltOnce), _declare(serializers.Serializer)
INPUTS = [
    {"items": [{"sku": "A", "quantity": 1}], "address": {"country": "GB"}},
    {"items": [{"sku": "A" * 9, "quantity": 9}], "address": {"country": "gb"}},
    {"items": [], "address": {}, "note": "no"},
    {"items": [{"sku": "B", "quantity": 2}, {"sku": "C"}], "address": {"country": "FR"}, "note": "ok"},
    {"items": [{"sku": "D", "quantity": 5}], "address": {"country": "DE"}, "note": "fine"},
    "not an object",
]


def _outcome(serializer_class: type, data: object) -> tuple:
    serializer = serializer_class(data=data)
    valid = serializer.is_valid()
    return valid, serializer.validated_data if valid else serializer.errors


@pytest.mark.parametrize("data", INPUTS)
def test_each_input_gets_drfs_own_answer(data):
    assert _outcome(REUSED, data) == _outcome(PLAIN, data)


def test_one_instance_leaves_nothing_behind_for_the_next():
    for data in INPUTS * 3:
        assert _outcome(REUSED, data) == _outcome(PLAIN, data), data


def test_threads_validating_at_once_each_get_their_own_answer():
    calls = [functools.partial(lambda data: [_outcome(REUSED, data) for _ in range(50)], data)
             for data in INPUTS * 4]

    results = all_at_once(calls)

    for data, got in zip(INPUTS * 4, results, strict=True):
        assert got == [_outcome(PLAIN, data)] * 50, data
