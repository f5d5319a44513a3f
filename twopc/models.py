from django.db import models


class Decision(models.Model):
    """The coordinator log: what was decided for one global transaction, written and committed before phase two
    starts (the commit point). No row means abort (presumed abort): only commits must be logged; an abort is
    logged when a branch had already prepared, so the admin shows why it was rolled back."""

    class Outcome(models.TextChoices):
        COMMIT = "commit", "commit"
        ABORT = "abort", "abort"

    gtrid = models.CharField(max_length=64, primary_key=True, help_text="Global transaction id, one per order.")
    decision = models.CharField(max_length=6, choices=Outcome.choices)
    # The branches: the database alias of each, which is also the branch qualifier of its transaction id.
    branches = models.JSONField(default=list)
    order_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    decided_at = models.DateTimeField()

    class Meta:
        ordering = ["-decided_at"]

    def __str__(self) -> str:
        return f"{self.gtrid}: {self.decision}"
