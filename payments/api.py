from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments.selectors import wallet_for_customer


class WalletApi(APIView):
    @extend_schema(responses=inline_serializer("Wallet", {"balance_cents": serializers.IntegerField()}))
    def get(self, request: Request) -> Response:
        wallet = wallet_for_customer(customer_id=request.user.pk)
        return Response({"balance_cents": wallet.balance_cents if wallet else 0})
