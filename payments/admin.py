from django.contrib import admin

from payments.models import Payment, Wallet
from shop.admin import ReadOnlyAdmin


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ["customer_id", "balance_cents", "deposited_cents", "updated_at"]
    search_fields = ["=customer_id"]


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "customer_id", "amount_cents", "status", "created_at", "refunded_at"]
    list_filter = ["status"]
    search_fields = ["=order_id", "=customer_id", "key", "gateway_reference"]
