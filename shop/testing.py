"""Helpers for tests and benchmarks that place orders."""

from __future__ import annotations

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Analytical St", "city": "London", "postal_code": "N1 9GU",
           "country": "GB"}


def order_body(lines: list[tuple[str, int]], *, token: str = "tok_ok", country: str = "GB") -> dict:
    return {
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines],
        "payment": {"token": token},
        "shipping_address": {**ADDRESS, "country": country},
    }
