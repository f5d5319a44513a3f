from __future__ import annotations

from rest_framework import serializers
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny

from inventory.models import Product
from inventory.selectors import product_list


class ProductSerializer(serializers.ModelSerializer):
    available = serializers.IntegerField(source="on_hand", read_only=True)

    class Meta:
        model = Product
        fields = ["sku", "name", "price_cents", "available"]
        read_only_fields = fields


class ProductListApi(ListAPIView):
    permission_classes = [AllowAny]
    serializer_class = ProductSerializer

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return product_list()
