from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _atomic(settings):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "atomic"


@pytest.fixture
def post_order() -> Callable[..., Any]:
    """POST an order body with `key` as its Idempotency-Key."""

    def post(client, body: Any, key: str) -> Any:  # type: ignore[no-untyped-def]
        return client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    return post
