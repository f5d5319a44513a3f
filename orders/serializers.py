from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from inventory.selectors import product_prices
from orders.models import Order, OrderLine


class OrderLineInputSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=32)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY)


class PaymentInputSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=64)


class AddressSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    line1 = serializers.CharField(max_length=200)
    city = serializers.CharField(max_length=100)
    postal_code = serializers.CharField(max_length=20)
    country = serializers.RegexField(r"^[A-Z]{2}$", help_text="ISO 3166-1 alpha-2, upper case")


class OrderCreateSerializer(serializers.Serializer):
    lines = OrderLineInputSerializer(many=True, allow_empty=False, max_length=settings.ORDER_MAX_LINES)
    payment = PaymentInputSerializer()
    shipping_address = AddressSerializer()

    def validate_lines(self, lines: list[dict]) -> list[dict]:
        skus = [line["sku"] for line in lines]
        duplicates = sorted({sku for sku in skus if skus.count(sku) > 1})
        if duplicates:
            raise serializers.ValidationError(f"Duplicate SKU line(s): {', '.join(duplicates)}.")
        return lines

    def validate(self, attrs: dict) -> dict:
        # The prices read to find unknown SKUs are the ones the order is placed at: read once per request.
        skus = [line["sku"] for line in attrs["lines"]]
        prices = product_prices(skus=skus)
        unknown = sorted(set(skus) - set(prices))
        if unknown:
            raise serializers.ValidationError({"lines": [f"Unknown SKU(s): {', '.join(unknown)}."]})
        return {**attrs, "unit_prices": prices}


class OrderLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price_cents"]
        read_only_fields = fields


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "id", "url", "status", "failure_reason", "failure_detail", "total_cents", "lines",
            "shipping_address", "flow", "created_at", "updated_at", "finalized_at",
        ]
        read_only_fields = fields

    def get_url(self, order: Order) -> str:
        from django.urls import reverse

        return reverse("order-detail", kwargs={"order_id": order.pk})
