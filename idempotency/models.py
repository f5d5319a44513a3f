from django.db import models


class IdempotencyKey(models.Model):
    """One client's Idempotency-Key: who holds it now, or the response it was answered with.

    A key is LOCKED while a request runs under it and COMPLETED once its response is stored. A lock is only a
    lease (`locked_until`): a process that dies mid-request leaves a lock that a retry may take over.
    """

    class State(models.TextChoices):
        LOCKED = "locked", "locked"
        COMPLETED = "completed", "completed"

    # The user's id, not a foreign key: keys are per user, and the record outlives nothing it points at.
    user_id = models.BigIntegerField()
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2048)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and canonical JSON body.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.LOCKED)
    # Which attempt holds the lock: only that attempt may store a response or release the key.
    lock_token = models.UUIDField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    # The exact bytes that were sent (as text), so a replay is byte-for-byte the first answer.
    response_body = models.TextField(blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "idempotency_key"
        constraints = [
            models.UniqueConstraint(fields=["user_id", "key"], name="idempotency_key_unique_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.key!r} of user {self.user_id} ({self.state})"
