"""Pages for people, outside the API."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def landing(request: HttpRequest) -> HttpResponse:
    """GET /: where a person who opened the shop in a browser can go next."""
    return render(request, "shop/landing.html", {"order_flow": settings.ORDER_FLOW, "profile": settings.SHOP_ENV})
