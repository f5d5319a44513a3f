"""The v1 contract: validation, authentication, ownership, problem+json."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from orders.models import Order
from shop.testing import order_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(make_product, make_customer, client_for):  # type: ignore[no-untyped-def]
    make_product(sku="SKU-A", stock=50)
    make_product(sku="SKU-B", stock=50)
    alice, bob = make_customer(username="alice"), make_customer(username="bob")
    return {"alice": client_for(alice), "bob": client_for(bob)}


def _problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"/problems/{code}"
    return body


@pytest.mark.parametrize(
    "body",
    [
        order_body([("SKU-A", 0)]),
        order_body([("SKU-A", 101)]),
        order_body([("SKU-A", 1), ("SKU-A", 2)]),
        order_body([("SKU-NOPE", 1)]),
        order_body([]),
        {**order_body([("SKU-A", 1)]), "payment": {}},
        {"lines": [{"sku": "SKU-A", "quantity": "two"}]},
        order_body([("SKU-A", 1)], country="gb"),
        order_body([(f"SKU-{i}", 1) for i in range(51)]),
    ],
    ids=["zero", "over-100", "duplicate-sku", "unknown-sku", "no-lines", "no-token", "not-a-number",
         "bad-country", "51-lines"],
)
def test_invalid_orders_are_400_and_create_nothing(world, body):
    response = world["alice"].post("/api/v1/orders", body, format="json")
    problem = _problem(response, 400, "validation-error")
    assert problem["errors"]
    assert Order.objects.count() == 0


def test_malformed_json_is_400(world):
    response = world["alice"].post("/api/v1/orders", "{not json", content_type="application/json")
    _problem(response, 400, "malformed-request")


def test_oversized_body_is_413(world, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    body = order_body([("SKU-A", 1)])
    body["shipping_address"]["line1"] = "x" * 4096
    response = world["alice"].post("/api/v1/orders", json.dumps(body), content_type="application/json")
    _problem(response, 413, "request-too-large")
    assert Order.objects.count() == 0


def test_orders_require_authentication(world):
    anonymous = APIClient()
    _problem(anonymous.post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json"), 401,
             "not-authenticated")
    _problem(anonymous.get("/api/v1/orders"), 401, "not-authenticated")
    _problem(anonymous.get("/api/v1/wallet"), 401, "not-authenticated")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token nope")
    _problem(bad.get("/api/v1/orders"), 401, "authentication-failed")


def test_customers_see_only_their_own_orders(world):
    created = world["alice"].post("/api/v1/orders", order_body([("SKU-A", 1)]), format="json").json()
    world["bob"].post("/api/v1/orders", order_body([("SKU-B", 1)]), format="json")

    _problem(world["bob"].get(f"/api/v1/orders/{created['id']}"), 404, "not-found")
    assert world["alice"].get(f"/api/v1/orders/{created['id']}").json()["status"] == "CONFIRMED"
    listing = world["alice"].get("/api/v1/orders").json()
    assert [order["id"] for order in listing["results"]] == [created["id"]]


def test_status_and_total_are_read_only(world):
    body = {**order_body([("SKU-A", 1)]), "status": "FAILED", "total_cents": 1, "customer_id": 999}
    created = world["alice"].post("/api/v1/orders", body, format="json").json()
    assert created["status"] == "CONFIRMED"
    assert created["total_cents"] == 1000
    assert Order.objects.get(pk=created["id"]).customer_id != 999


def test_token_login_products_and_wallet(world, make_customer):
    make_customer(username="carol", balance_cents=4321)
    client = APIClient()
    token = client.post("/api/v1/auth/token", {"username": "carol", "password": "password"}, format="json")
    assert token.status_code == 200
    _problem(client.post("/api/v1/auth/token", {"username": "carol", "password": "wrong"}, format="json"),
             400, "validation-error")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert client.get("/api/v1/wallet").json() == {"balance_cents": 4321}
    products = client.get("/api/v1/products").json()
    assert [(p["sku"], p["available"]) for p in products["results"]] == [("SKU-A", 50), ("SKU-B", 50)]


def test_unknown_url_is_a_problem(world):
    _problem(world["alice"].get("/api/v1/orders/123456789"), 404, "not-found")


def test_schema_and_docs_are_served(world):
    client = APIClient()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/orders" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
