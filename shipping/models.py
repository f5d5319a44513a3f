from django.db import models


class Shipment(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "SCHEDULED", "scheduled"
        CANCELLED = "CANCELLED", "cancelled"

    order_id = models.BigIntegerField(unique=True)
    # `{saga or order}:ship`: repeating the step with the same key schedules once.
    key = models.CharField(max_length=120, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    name = models.CharField(max_length=200)
    line1 = models.CharField(max_length=200)
    city = models.CharField(max_length=100)
    postal_code = models.CharField(max_length=20)
    country = models.CharField(max_length=2)
    tracking_number = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"shipment for order {self.order_id} ({self.status})"
