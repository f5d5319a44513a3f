from django.db import models


class BenchRow(models.Model):
    """One row per POST to the bare benchmark endpoint: the least a write request can do."""

    note = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"bench row {self.pk}"
