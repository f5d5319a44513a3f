"""The key services on their own: fingerprints, leases, purge, and how few queries the hot path costs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from idempotency.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from idempotency.models import IdempotencyKey
from idempotency.services import (
    Claim,
    StoredResponse,
    key_claim,
    key_complete,
    key_release,
    request_fingerprint,
)
from operations.demo import DemoSpec, seed

pytestmark = pytest.mark.django_db

PATH = "/api/v1/orders"


def _claim(key: str = "k", *, user_id: int = 1, body: object = None) -> Claim | StoredResponse:
    fingerprint = request_fingerprint(method="POST", path=PATH, body=body or {"a": 1})
    return key_claim(user_id=user_id, key=key, method="POST", path=PATH, fingerprint=fingerprint)


def test_the_fingerprint_ignores_key_order_but_not_content():
    base = request_fingerprint(method="POST", path=PATH, body={"a": 1, "b": {"c": [1, 2], "d": "x"}})
    assert base == request_fingerprint(method="post", path=PATH, body={"b": {"d": "x", "c": [1, 2]}, "a": 1})
    assert base != request_fingerprint(method="POST", path=PATH, body={"a": 1, "b": {"c": [2, 1], "d": "x"}})
    assert base != request_fingerprint(method="PUT", path=PATH, body={"a": 1, "b": {"c": [1, 2], "d": "x"}})
    assert base != request_fingerprint(method="POST", path=PATH + "?x", body={"a": 1, "b": {"c": [1, 2], "d": "x"}})


@pytest.mark.django_db(transaction=True)  # as in production: no test savepoints around the statements
def test_the_hot_path_costs_one_query_to_claim_and_one_to_store(django_assert_num_queries):
    with django_assert_num_queries(1):
        claim = _claim()
    assert isinstance(claim, Claim)
    with django_assert_num_queries(1):
        assert key_complete(claim=claim, status=201, body="{}", headers={"Content-Type": "application/json"})
    with django_assert_num_queries(2):  # the insert that loses, then the read of the stored answer
        assert _claim() == StoredResponse(status=201, body="{}", headers={"Content-Type": "application/json"})


def test_a_held_key_is_in_use_and_another_body_is_refused():
    assert isinstance(_claim(), Claim)
    with pytest.raises(IdempotencyKeyInUse):
        _claim()
    with pytest.raises(IdempotencyKeyReused):
        _claim(body={"a": 2})
    assert isinstance(_claim(user_id=2), Claim)


def test_only_one_retry_takes_over_a_dead_lease_and_the_late_first_attempt_stores_nothing():
    first = _claim()
    assert isinstance(first, Claim)
    IdempotencyKey.objects.update(locked_until=timezone.now() - timedelta(seconds=1))

    second = _claim()
    assert isinstance(second, Claim)
    assert second.resumed
    with pytest.raises(IdempotencyKeyInUse):
        _claim()

    # The first attempt was only slow: it finishes after losing its lease, and must not answer for the key.
    assert not key_complete(claim=first, status=500, body="late", headers={})
    key_release(claim=first)
    assert key_complete(claim=second, status=201, body="{}", headers={})
    assert IdempotencyKey.objects.get().response_body == "{}"


def test_release_frees_the_key_for_a_new_attempt():
    claim = _claim()
    assert isinstance(claim, Claim)
    key_release(claim=claim)
    assert IdempotencyKey.objects.count() == 0
    again = _claim(body={"fixed": True})
    assert isinstance(again, Claim)
    assert not again.resumed


def test_purge_deletes_expired_keys_only(capsys):
    for key in ("old-done", "old-held", "fresh-done", "fresh-held"):
        claim = _claim(key)
        if key.endswith("done"):
            key_complete(claim=claim, status=201, body="{}", headers={})
    IdempotencyKey.objects.filter(key__startswith="old").update(expires_at=timezone.now() - timedelta(seconds=1))

    call_command("purge_idempotency_keys")

    assert "Purged 2 expired" in capsys.readouterr().out
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh-done", "fresh-held"]


def test_seed_forgets_every_key():
    _claim()
    seed(DemoSpec(customers=1, products=1))
    assert IdempotencyKey.objects.count() == 0
