from django.db import models


class Wallet(models.Model):
    customer_id = models.BigIntegerField(unique=True, help_text="The customer's user id.")
    balance_cents = models.BigIntegerField()
    deposited_cents = models.BigIntegerField(help_text="Money ever put in; the audit's reference for I1.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer_id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(balance_cents__gte=0), name="wallet_balance_non_negative"),
        ]

    def __str__(self) -> str:
        return f"wallet of customer {self.customer_id}"


class Payment(models.Model):
    class Status(models.TextChoices):
        CHARGED = "CHARGED", "charged"
        REFUNDED = "REFUNDED", "refunded"

    order_id = models.BigIntegerField(unique=True)
    # `{saga or order}:charge`: repeating the step with the same key charges once.
    key = models.CharField(max_length=120, unique=True)
    customer_id = models.BigIntegerField(db_index=True)
    amount_cents = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CHARGED)
    gateway_reference = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount_cents__gt=0), name="payment_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"payment for order {self.order_id} ({self.status})"
