"""The OpenAPI schema states what the API does: the Idempotency-Key rule, the limits, every error answer.
(`make schema-fuzz` checks the same against a live server with schemathesis.)"""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_idempotency_key_is_required_printable_ascii_of_1_to_255(schema):
    header = next(p for p in schema["paths"]["/api/v1/orders"]["post"]["parameters"]
                  if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and header["required"] is True
    assert (header["schema"]["minLength"], header["schema"]["maxLength"]) == (1, 255)
    pattern = re.compile(header["schema"]["pattern"])
    assert pattern.fullmatch("7b1e-first-try ~!") and not pattern.fullmatch("caf\u00e9") \
        and not pattern.fullmatch("a\tb")


def test_order_lines_have_their_limits(schema):
    lines = schema["components"]["schemas"]["OrderCreate"]["properties"]["lines"]
    assert (lines["minItems"], lines["maxItems"]) == (1, 50)
    line = schema["components"]["schemas"]["OrderLineInput"]["properties"]
    assert (line["quantity"]["minimum"], line["quantity"]["maximum"]) == (1, 100)


@pytest.mark.parametrize(("path", "method", "statuses"), [
    ("/api/v1/orders", "post", {"201", "202", "400", "401", "402", "409", "413", "415", "422", "429", "503"}),
    ("/api/v1/orders", "get", {"200", "400", "401", "404", "429", "503"}),
    ("/api/v1/orders/{order_id}", "get", {"200", "400", "401", "404", "429", "503"}),
    ("/api/v1/auth/token", "post", {"200", "400", "413", "415", "429", "503"}),
    ("/api/v1/auth/token/revoke", "post", {"204", "401", "503"}),
])
def test_every_answer_is_listed_and_errors_are_problem_json(schema, path, method, statuses):
    responses = schema["paths"][path][method]["responses"]
    assert statuses <= set(responses), sorted(responses)
    for status, response in responses.items():
        if status >= "400":
            assert list(response["content"]) == ["application/problem+json"], (status, response)
            assert response["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
