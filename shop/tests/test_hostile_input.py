"""Hostile bodies and headers get a problem+json 400, never a 500: deep nesting, lone surrogates, a bad Host."""

from __future__ import annotations

import json
import logging

import pytest
from rest_framework.test import APIClient

from orders.models import Order
from shop.testing import order_body

pytestmark = pytest.mark.django_db

DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture
def customer_client(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=5)
    return client_for(make_customer())


def _problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code, body
    return body


@pytest.mark.parametrize("path", ["/api/v1/auth/token", "/api/v1/orders"])
def test_json_nested_5000_deep_is_a_malformed_request_in_one_log_line(customer_client, path, caplog):
    caplog.set_level(logging.INFO)
    client = customer_client if path != "/api/v1/auth/token" else APIClient()
    response = client.post(path, DEEP, content_type="application/json")
    _problem(response, 400, "malformed_request")
    assert not any(record.exc_info for record in caplog.records), [r.getMessage() for r in caplog.records]


def test_json_nested_just_below_the_recursion_limit_is_malformed_too(customer_client):
    # Parsed by json, but deep enough to crash code that walks it later (the request fingerprint).
    body = {"lines": [{"sku": "SKU-A", "quantity": 1}], "payment": {"token": "tok_ok"},
            "shipping_address": json.loads("[" * 900 + "]" * 900)}
    response = customer_client.post("/api/v1/orders", json.dumps(body), content_type="application/json")
    _problem(response, 400, "malformed_request")


@pytest.mark.parametrize("where", ["name", "city", "sku", "token", "key"])
def test_a_lone_surrogate_in_an_order_is_a_validation_error(customer_client, settings, where):
    settings.ORDER_FLOW = "atomic"
    body = order_body([("SKU-A", 1)])
    if where == "sku":
        body["lines"][0]["sku"] = "SKU-\ud800"
    elif where == "token":
        body["payment"]["token"] = "tok_\udfff"
    elif where == "key":
        body["shipping_address"]["\ud800"] = "x"
    else:
        body["shipping_address"][where] = "Ada \ud800"
    raw = json.dumps(body)  # ensure_ascii: the surrogate travels as the escape \ud800, as an attacker sends it
    assert "\\ud800" in raw or "\\udfff" in raw
    response = customer_client.post("/api/v1/orders", raw, content_type="application/json")
    problem = _problem(response, 400, "validation_error")
    assert "surrogate" in json.dumps(problem["errors"])
    assert Order.objects.count() == 0


def test_a_lone_surrogate_in_a_login_is_a_validation_error():
    raw = json.dumps({"username": "\ud800", "password": "x"})
    _problem(APIClient().post("/api/v1/auth/token", raw, content_type="application/json"), 400,
             "validation_error")


def test_a_host_not_allowed_is_a_problem_naming_allowed_hosts_logged_without_traceback(caplog):
    response = APIClient().get("/api/v1/products", HTTP_HOST="attacker.example")
    body = _problem(response, 400, "bad_host")
    assert "ALLOWED_HOSTS" in body["detail"] and "attacker.example" in body["detail"]
    records = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert len(records) == 1 and "Invalid HTTP_HOST header" in records[0].getMessage()
    assert records[0].exc_info is None

