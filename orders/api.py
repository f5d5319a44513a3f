from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from idempotency.decorators import idempotent, request_claim
from idempotency.errors import IdempotencyKeyReused
from orders.errors import Overloaded
from orders.flows import is_synchronous as flow_is_synchronous
from orders.flows import place_order
from orders.models import Order
from orders.selectors import order_get_by_request_key, order_get_for_customer, order_list_for_customer
from orders.serializers import OrderCreateSerializer, OrderSerializer
from orders.services import PlaceOrder
from shop.db import is_connection_exhausted
from shop.logs import log_context_add

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]{1,255}$"},
    OpenApiParameter.HEADER, required=settings.IDEMPOTENCY_KEY_REQUIRED,
    description="Makes a retried POST safe: 1-255 printable ASCII characters, a fresh one per order (DESIGN.md "
                "section 5). A repeat with the same key and body is answered with the first response.",
)


class OrderListCreateApi(ListAPIView):
    serializer_class = OrderSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return order_list_for_customer(customer_id=self.request.user.pk)

    @extend_schema(
        request=OrderCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: OrderSerializer,
            202: OpenApiResponse(OrderSerializer, description="Accepted; poll the Location until final."),
            400: OpenApiResponse(description="Invalid request, missing or invalid Idempotency-Key (problem+json)"),
            402: OpenApiResponse(description="Payment declined (problem+json)"),
            409: OpenApiResponse(description="Out of stock, or the Idempotency-Key is in use (problem+json)"),
            422: OpenApiResponse(description="Undeliverable address, or the Idempotency-Key was used for "
                                             "another request (problem+json)"),
            503: OpenApiResponse(description="Payment gateway unavailable, or `overloaded` (saga backlog at "
                                             "its bound, no database connection free): retry after "
                                             "Retry-After (problem+json)"),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        claim = request_claim(request)
        command = PlaceOrder(
            customer_id=request.user.pk,
            lines=[(line["sku"], line["quantity"]) for line in data["lines"]],
            payment_token=data["payment"]["token"],
            shipping_address=data["shipping_address"],
            request_key=claim.key if claim else None,
            unit_prices=data["unit_prices"],
        )
        # The order comes back as placed (or as found, for a repeat), lines included: nothing is read again.
        order = _place_once(command, earlier_attempt=claim is not None and claim.resumed)
        log_context_add(order_id=order.pk)
        body = OrderSerializer(order).data
        if flow_is_synchronous():
            return Response(body, status=status.HTTP_201_CREATED)
        # Accepted and continuing in the background, whatever state the order has reached by now: a repeat
        # that finds an order its first attempt placed answers exactly like that first attempt did.
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    def handle_exception(self, exc: Exception) -> Response:
        # No connection to be had (the server's or a pool's limit reached) is overload, not an outage: answered
        # like a full saga backlog, so a client backs off the same way.
        if is_connection_exhausted(exc):
            exc = Overloaded("No database connection is free; nothing was placed, retry after the delay.")
        return super().handle_exception(exc)


def _place_once(command: PlaceOrder, *, earlier_attempt: bool) -> Order:
    """Place the order unless an earlier attempt under the same key already did.

    The order carries its key (unique per customer) in the transaction that creates it, so whatever died
    between the order and the key's stored response, the order is found here instead of placed twice.
    """
    if earlier_attempt and command.request_key:
        existing = _order_for_key(command)
        if existing is not None:
            return existing
    try:
        return place_order(command)
    except IntegrityError:
        # An attempt whose lease ran out while it was still running committed the order first.
        existing = _order_for_key(command) if command.request_key else None
        if existing is None:
            raise
        return existing


def _order_for_key(command: PlaceOrder) -> Order | None:
    assert command.request_key is not None
    order = order_get_by_request_key(customer_id=command.customer_id, request_key=command.request_key)
    if order is None:
        return None
    # The key record may have expired and been purged while the order keeps its key for good: answer with the
    # order only if it is what this request asks for.
    asked = (sorted(command.lines), command.payment_token, dict(command.shipping_address))
    placed = ([(line.sku, line.quantity) for line in order.lines.all()], order.payment_token, order.shipping_address)
    if asked != placed:
        raise IdempotencyKeyReused(f"Idempotency-Key {command.request_key!r} already placed order {order.pk}, "
                                   "which is a different order; use a new key.")
    return order


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderSerializer)
    def get(self, request: Request, order_id: int) -> Response:
        order = order_get_for_customer(order_id=order_id, customer_id=request.user.pk)
        if order is None:
            raise NotFound("No such order.")
        return Response(OrderSerializer(order).data)
