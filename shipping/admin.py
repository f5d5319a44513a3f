from django.contrib import admin

from shipping.models import Shipment


@admin.register(Shipment)
class ShipmentAdmin(admin.ModelAdmin):
    list_display = ["id", "order_id", "status", "country", "city", "tracking_number", "created_at"]
    list_filter = ["status", "country"]
    search_fields = ["=order_id", "key", "tracking_number", "name"]
    readonly_fields = [f.name for f in Shipment._meta.fields]
