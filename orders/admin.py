from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from inventory.selectors import reservation_for_order
from orders.choreography import ORDER_CHOREOGRAPHY
from orders.models import Order, OrderLine
from orders.sagas import ORDER_SAGA
from payments.selectors import payment_for_order
from sagas.admin import step_name
from sagas.choreography import trace
from sagas.selectors import saga_find
from shipping.selectors import shipment_for_order
from shop.admin import ReadOnlyAdmin


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    readonly_fields = ["sku", "quantity", "unit_price_cents"]

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


def _describe(obj: object | None, *fields: str) -> str:
    if obj is None:
        return "-"
    return format_html(
        "<br>".join("{}: {}".format(name.replace("_", " "), "{}") for name in fields),
        *(getattr(obj, name) for name in fields),
    )


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["id", "customer_id", "status", "failure_reason", "total_cents", "flow", "created_at",
                    "finalized_at"]
    list_filter = ["status", "failure_reason", "flow"]
    search_fields = ["=id", "=customer_id"]
    date_hierarchy = "created_at"
    inlines = [OrderLineInline]
    readonly_fields = [
        "customer_id", "status", "failure_reason", "failure_detail", "total_cents", "payment_token",
        "shipping_address", "flow", "created_at", "updated_at", "finalized_at",
        "saga", "reservation", "payment", "shipment", "event_trace",
    ]

    @admin.display(description="Saga")
    def saga(self, order: Order) -> str:
        saga = saga_find(saga_type=ORDER_SAGA.name, key="order_id", value=order.pk)
        if saga is None:
            return "-" if order.flow != "saga" else "not started"
        return format_html('<a href="{}">{}</a> ({}, step {})', reverse("admin:sagas_sagainstance_change",
                                                                         args=[saga.pk]),
                           saga.pk, saga.get_state_display(), step_name(saga))

    @admin.display(description="Inventory reservation")
    def reservation(self, order: Order) -> str:
        return _describe(reservation_for_order(order_id=order.pk), "status", "lines", "created_at")

    @admin.display(description="Payment")
    def payment(self, order: Order) -> str:
        return _describe(payment_for_order(order_id=order.pk), "status", "amount_cents", "gateway_reference",
                         "created_at")

    @admin.display(description="Shipment")
    def shipment(self, order: Order) -> str:
        return _describe(shipment_for_order(order_id=order.pk), "status", "tracking_number", "country",
                         "created_at")

    @admin.display(description="Event trace (choreography)")
    def event_trace(self, order: Order) -> str:
        """Every event of a choreographed order, in order: the choreography's only log. A timed-out order
        shows OrderTimedOut with the sweeper's reason, then the undo chain it started."""
        if order.flow != "choreography":
            return "-"
        rows = trace(choreography=ORDER_CHOREOGRAPHY, flow_id=str(order.pk))
        if not rows:
            return "no event recorded"
        return format_html(
            "<table><tr><th>at</th><th>event</th><th>emitted by</th><th>received by (deliveries)</th></tr>{}"
            "</table>",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
                (row["at"].isoformat(timespec="milliseconds"), row["event"], row["service"],
                 ", ".join(f"{consumer} ({count})" for consumer, count in row["received_by"]) or "-")
                for row in rows)))
