"""The order flow, coordinated as settings.ORDER_FLOW says. This is the one place that branches on it.

Every flow is a coordinator over the same steps, declared once in orders/steps.py (create, reserve, charge,
ship, confirm); only the coordination differs. A flow returns the order: final (CONFIRMED) when it ran
synchronously, PENDING when it continues in the background. Business failures of a synchronous flow are
raised as shop.errors types.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from django.conf import settings

from orders.models import Order
from orders.services import PlaceOrder


def place_order(command: PlaceOrder) -> Order:
    return _flow().place_order(command)


def is_synchronous() -> bool:
    """True when the flow's orders are final once placed (the API answers 201); False when they continue in
    the background (202 + Location, for the first request and every repeat alike)."""
    return _flow().SYNCHRONOUS


def _flow() -> ModuleType:
    return import_module(f"orders.flows.{settings.ORDER_FLOW}")
