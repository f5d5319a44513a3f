from django.contrib import admin

from shipping.models import Shipment
from shop.admin import ReadOnlyAdmin


@admin.register(Shipment)
class ShipmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "status", "country", "city", "tracking_number", "created_at"]
    list_filter = ["status", "country"]
    search_fields = ["=order_id", "key", "tracking_number", "name"]
