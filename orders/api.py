from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orders.flows import place_order
from orders.selectors import order_get, order_get_for_customer, order_list_for_customer
from orders.serializers import OrderCreateSerializer, OrderSerializer
from orders.services import PlaceOrder

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, description="Makes a retried POST safe (1-255 chars)."
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
            400: OpenApiResponse(description="Invalid request (problem+json)"),
            402: OpenApiResponse(description="Payment declined (problem+json)"),
            409: OpenApiResponse(description="Out of stock (problem+json)"),
            422: OpenApiResponse(description="Undeliverable address (problem+json)"),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        order = place_order(
            PlaceOrder(
                customer_id=request.user.pk,
                lines=[(line["sku"], line["quantity"]) for line in data["lines"]],
                payment_token=data["payment"]["token"],
                shipping_address=data["shipping_address"],
            )
        )
        order = order_get(order_id=order.pk)
        body = OrderSerializer(order).data
        if order.is_final:
            return Response(body, status=status.HTTP_201_CREATED)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderSerializer)
    def get(self, request: Request, order_id: int) -> Response:
        order = order_get_for_customer(order_id=order_id, customer_id=request.user.pk)
        if order is None:
            raise NotFound("No such order.")
        return Response(OrderSerializer(order).data)
