from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING", "pending"
        CONFIRMED = "CONFIRMED", "confirmed"
        FAILED = "FAILED", "failed"

    # The only moves an order may make; orders.services.order_transition refuses any other.
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.PENDING: frozenset({Status.CONFIRMED, Status.FAILED}),
        Status.CONFIRMED: frozenset(),
        Status.FAILED: frozenset(),
    }

    customer_id = models.BigIntegerField(help_text="The customer's user id (no cross-service foreign key).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    failure_reason = models.CharField(max_length=40, blank=True, help_text="Stable code, e.g. out_of_stock.")
    failure_detail = models.CharField(max_length=300, blank=True)
    total_cents = models.BigIntegerField()
    payment_token = models.CharField(max_length=64)
    shipping_address = models.JSONField()
    flow = models.CharField(max_length=20, help_text="The ORDER_FLOW that placed this order.")
    # The client's Idempotency-Key, written in the same transaction as the order: whatever crashes between
    # the order and the key's stored response, a retry finds this order instead of placing a second one.
    request_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 (NULL: no key, not unique)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True, help_text="When it became CONFIRMED or FAILED.")

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["customer_id", "-id"]),
            models.Index(fields=["status"]),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(total_cents__gte=0), name="order_total_non_negative"),
            models.UniqueConstraint(fields=["customer_id", "request_key"], name="order_unique_request_key",
                                    condition=models.Q(request_key__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status != self.Status.PENDING


class OrderLine(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    sku = models.CharField(max_length=32)
    quantity = models.PositiveIntegerField()
    unit_price_cents = models.PositiveIntegerField()

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.UniqueConstraint(fields=["order", "sku"], name="order_line_unique_sku"),
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="order_line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents
