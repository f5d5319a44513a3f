from django.contrib import admin

from payments.models import Payment, Wallet


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ["customer_id", "balance_cents", "deposited_cents", "updated_at"]
    search_fields = ["=customer_id"]
    readonly_fields = ["balance_cents", "deposited_cents", "updated_at"]


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["id", "order_id", "customer_id", "amount_cents", "status", "created_at", "refunded_at"]
    list_filter = ["status"]
    search_fields = ["=order_id", "=customer_id", "key", "gateway_reference"]
    readonly_fields = [f.name for f in Payment._meta.fields]
