from django.contrib import admin

from inventory.models import Product, Reservation
from shop.admin import ReadOnlyAdmin


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price_cents", "on_hand", "received", "updated_at"]
    search_fields = ["sku", "name"]
    readonly_fields = ["on_hand", "received", "updated_at"]


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "status", "units", "created_at", "released_at"]
    list_filter = ["status"]
    search_fields = ["=order_id", "key"]
