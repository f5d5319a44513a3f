from django.db import models


class Product(models.Model):
    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    price_cents = models.PositiveIntegerField()
    on_hand = models.IntegerField(help_text="Units free to reserve.")
    received = models.IntegerField(help_text="Units ever put into stock; the audit's reference for I2.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=models.Q(on_hand__gte=0), name="product_on_hand_non_negative"),
            models.CheckConstraint(condition=models.Q(price_cents__gt=0), name="product_price_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class Reservation(models.Model):
    class Status(models.TextChoices):
        HELD = "HELD", "held"
        RELEASED = "RELEASED", "released"

    order_id = models.BigIntegerField(unique=True)
    # `{saga or order}:reserve`: repeating the step with the same key is harmless.
    key = models.CharField(max_length=120, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    lines = models.JSONField(help_text='[{"sku": ..., "quantity": ...}], sorted by SKU')
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"reservation for order {self.order_id} ({self.status})"

    @property
    def units(self) -> int:
        return sum(line["quantity"] for line in self.lines)
