import uuid

from django.db import models


class SagaInstance(models.Model):
    """One run of a saga definition, persisted so that any process can resume it after any crash."""

    class State(models.TextChoices):
        RUNNING = "RUNNING", "running"
        COMPENSATING = "COMPENSATING", "compensating"
        COMPLETED = "COMPLETED", "completed"
        COMPENSATED = "COMPENSATED", "compensated"
        PARKED = "PARKED", "parked: needs attention"

    # The moves between these states are the table in sagas.engine (TABLE); nothing else decides one.
    ACTIVE = (State.RUNNING, State.COMPENSATING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    saga_type = models.CharField(max_length=50)
    state = models.CharField(max_length=12, choices=State.choices, default=State.RUNNING)
    current_step = models.PositiveSmallIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1, help_text="Attempt of the current step.")
    resends = models.PositiveSmallIntegerField(default=0, help_text="Times the sweeper re-sent this step.")
    data = models.JSONField(default=dict)
    failure = models.JSONField(null=True, blank=True, help_text='{"code", "detail", "step"} that started compensation')
    current_message = models.JSONField(null=True, blank=True, help_text="The command awaiting its reply.")
    step_deadline = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(help_text="The whole saga should be final by then (audit I3).")
    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["step_deadline"], name="saga_active_deadline",
                         condition=models.Q(state__in=["RUNNING", "COMPENSATING"])),
            models.Index(fields=["state"]),
        ]

    def __str__(self) -> str:
        return f"{self.saga_type} saga {self.pk} ({self.state})"


class SagaStepLog(models.Model):
    class Direction(models.TextChoices):
        ACTION = "action", "action"
        COMPENSATION = "compensation", "compensation"

    class Outcome(models.TextChoices):
        SENT = "sent", "sent"
        OK = "ok", "succeeded"
        BUSINESS = "business", "business failure"
        TRANSIENT = "transient", "transient failure"
        RESENT = "resent", "re-sent by the sweeper"
        # The action found its compensation's tombstone and did nothing (it arrived after the undo).
        COMPENSATED = "compensated", "skipped: already compensated"
        # A reply the saga no longer waited for (older attempt, other step, saga parked or finished).
        STALE = "stale", "late reply, recorded only"

    saga = models.ForeignKey(SagaInstance, related_name="log", on_delete=models.CASCADE)
    step = models.PositiveSmallIntegerField()
    step_name = models.CharField(max_length=50)
    direction = models.CharField(max_length=12, choices=Direction.choices)
    attempt = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    message_id = models.UUIDField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_detail = models.CharField(max_length=300, blank=True)
    duration_ms = models.FloatField(null=True, blank=True, help_text="From the command's sending to this reply.")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["saga", "id"]

    def __str__(self) -> str:
        return f"{self.step_name} {self.direction} #{self.attempt}: {self.outcome}"


class OutboxMessage(models.Model):
    """A message written in the same transaction as the change it announces; the relay publishes it."""

    id = models.BigAutoField(primary_key=True)
    message_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    queue = models.CharField(max_length=30)
    task = models.CharField(max_length=100)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    available_at = models.DateTimeField(help_text="Not published before (backoff of a retried step).")
    published_at = models.DateTimeField(null=True, blank=True)
    publish_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["available_at", "id"], name="outbox_pending",
                         condition=models.Q(published_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.task} -> {self.queue} ({'published' if self.published_at else 'pending'})"


class InboxMessage(models.Model):
    """A message a consumer has processed, written in the same transaction as its effect."""

    message_id = models.UUIDField()
    consumer = models.CharField(max_length=30)
    reply = models.JSONField(null=True, blank=True, help_text="What was answered; a duplicate gets it again.")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["consumer", "message_id"], name="inbox_unique_message"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer} <- {self.message_id}"


class StepGuard(models.Model):
    """Fences a step's action against its compensation, in the participant's own database.

    The action and the compensation of one step (same key, `{saga_id}:{step}`) both write this row first,
    in the transaction of their effect; the unique index makes the later of the two wait for the earlier
    one to commit. A compensation leaves state `compensated` (the tombstone): an action that arrives after
    it finds the tombstone and does nothing, so a late action can never apply after its undo.
    """

    class State(models.TextChoices):
        ACTED = "acted", "action applied"
        COMPENSATED = "compensated", "compensated (tombstone)"

    consumer = models.CharField(max_length=30)
    key = models.CharField(max_length=100)
    state = models.CharField(max_length=12, choices=State.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "key"], name="stepguard_unique_key")]

    def __str__(self) -> str:
        return f"{self.consumer} {self.key}: {self.state}"


class DeadLetter(models.Model):
    """A message its consumer could not handle (unparseable, unknown saga, or failing on every delivery).

    Kept with the raw payload and the error so a person can look, fix, and re-drive it from the admin.
    """

    consumer = models.CharField(max_length=30)
    task = models.CharField(max_length=100)
    queue = models.CharField(max_length=30, blank=True)
    message_id = models.CharField(max_length=100, blank=True, db_index=True)
    payload = models.JSONField(null=True, blank=True, help_text="The message as received.")
    error = models.TextField()
    deliveries = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    redriven_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.task} for {self.consumer}: {self.error[:60]}"


class EventRecord(models.Model):
    """One line of a choreographed flow's trace (sagas.choreography), in the database of the service that
    wrote it, in the same transaction as the business change it announces or that it caused.

    An emission (`consumer` empty): service `service` emitted `event`, at `at`. A delivery (`consumer` set):
    the event reached `consumer`, first at `at`, `deliveries` times in all (duplicates included).
    """

    flow = models.CharField(max_length=50)
    flow_id = models.CharField(max_length=50)
    event_id = models.UUIDField()
    event = models.CharField(max_length=60)
    service = models.CharField(max_length=30, help_text="The service that emitted the event.")
    consumer = models.CharField(max_length=30, blank=True, help_text="Empty: the emission itself.")
    at = models.DateTimeField()
    deliveries = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["flow", "flow_id", "at"], name="event_trace")]
        constraints = [models.UniqueConstraint(fields=["event_id", "consumer"], name="event_unique_delivery")]

    def __str__(self) -> str:
        to = f" -> {self.consumer}" if self.consumer else ""
        return f"{self.flow} {self.flow_id}: {self.event} from {self.service}{to}"
