from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html

from sagas.definitions import get_definition
from sagas.engine import saga_retry
from sagas.models import DeadLetter, EventRecord, InboxMessage, OutboxMessage, SagaInstance, SagaStepLog, StepGuard
from sagas.selectors import outbox_stats
from sagas.services import dead_letter_redrive
from shop.admin import ReadOnlyAdmin


def step_name(saga: SagaInstance) -> str:
    """The saga's current step by name ("3 charge_payment"), as its definition calls it."""
    try:
        return f"{saga.current_step} {get_definition(saga.saga_type).step(saga.current_step).name}"
    except (KeyError, IndexError):
        return str(saga.current_step)


class SagaStepLogInline(admin.TabularInline):
    model = SagaStepLog
    extra = 0
    can_delete = False
    ordering = ["id"]
    fields = ["at", "step", "step_name", "direction", "attempt", "outcome", "duration_ms", "error_code",
              "error_detail"]
    readonly_fields = fields
    verbose_name_plural = "Timeline"

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(SagaInstance)
class SagaInstanceAdmin(ReadOnlyAdmin):
    list_display = ["id", "saga_type", "state", "step", "attempt", "resends", "order_id", "failure_code",
                    "created_at", "finished_at"]
    list_filter = ["state", "saga_type"]
    search_fields = ["=id"]
    date_hierarchy = "created_at"
    inlines = [SagaStepLogInline]
    readonly_fields = ["step", "order_id", *(f.name for f in SagaInstance._meta.fields)]
    actions = ["retry_parked"]

    @admin.display(description="current step")
    def step(self, saga: SagaInstance) -> str:
        return step_name(saga)

    @admin.display(description="order")
    def order_id(self, saga: SagaInstance) -> object:
        order_id = saga.data.get("order_id")
        if order_id is None:
            return "-"
        try:
            return format_html('<a href="{}">{}</a>', reverse("admin:orders_order_change", args=[order_id]),
                               order_id)
        except NoReverseMatch:
            return order_id

    @admin.display(description="failure")
    def failure_code(self, saga: SagaInstance) -> str:
        return (saga.failure or {}).get("code", "")

    @admin.action(description="Retry the compensation of the selected parked sagas")
    def retry_parked(self, request: HttpRequest, queryset: QuerySet[SagaInstance]) -> None:
        retried = 0
        for saga in queryset.filter(state=SagaInstance.State.PARKED):
            if saga_retry(saga_id=saga.pk, saga_type=saga.saga_type):
                self.log_change(request, saga, "Retried the parked compensation.")
                retried += 1
        self.message_user(request, f"Retried {retried} parked saga(s).", messages.SUCCESS)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "queue", "message_id", "created_at", "available_at", "published_at",
                    "publish_count"]
    list_filter = ["queue", "task", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["=message_id"]
    actions = ["republish"]

    def changelist_view(self, request, extra_context=None):  # type: ignore[no-untyped-def]
        # Over every database: with a database per service, each service's outbox lives in its own.
        stats = outbox_stats()
        self.message_user(request, f"Pending in every outbox: {stats['pending']} message(s); oldest pending: "
                                   f"{stats['oldest_pending_age_seconds']:.1f} s old. (Listed below: the default "
                                   "database's outbox.)", messages.INFO)
        return super().changelist_view(request, extra_context)

    @admin.action(description="Publish the selected messages again")
    def republish(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        for message in queryset:
            self.log_change(request, message, "Queued for publishing again.")
        count = queryset.update(published_at=None, available_at=timezone.now())
        self.message_user(request, f"{count} message(s) queued for publishing again.", messages.SUCCESS)


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["message_id", "consumer", "received_at"]
    list_filter = ["consumer"]
    search_fields = ["=message_id"]


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    """Messages no delivery could handle. Fix the cause, then re-drive: the message goes back through the
    outbox to its queue, unchanged (its consumer's inbox still deduplicates it)."""

    list_display = ["id", "created_at", "consumer", "task", "message_id", "deliveries", "short_error", "redriven_at"]
    list_filter = ["consumer", "task", ("redriven_at", admin.EmptyFieldListFilter)]
    search_fields = ["=message_id"]
    actions = ["redrive"]

    @admin.display(description="error")
    def short_error(self, letter: DeadLetter) -> str:
        return letter.error[:80]

    @admin.action(description="Re-drive the selected messages (publish them again)")
    def redrive(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        redriven = 0
        for letter in queryset.filter(redriven_at__isnull=True):
            if dead_letter_redrive(letter_id=letter.pk, using=queryset.db):
                self.log_change(request, letter, "Re-driven to its queue.")
                redriven += 1
        self.message_user(request, f"Re-drove {redriven} message(s).", messages.SUCCESS)


@admin.register(StepGuard)
class StepGuardAdmin(ReadOnlyAdmin):
    list_display = ["key", "consumer", "state", "updated_at"]
    list_filter = ["consumer", "state"]
    search_fields = ["key"]


@admin.register(EventRecord)
class EventRecordAdmin(ReadOnlyAdmin):
    """The choreographies' trace rows: an emission (no consumer) or a delivery, with its count."""

    list_display = ["at", "flow", "flow_id", "event", "service", "consumer", "deliveries"]
    list_filter = ["flow", "event", "service", "consumer"]
    search_fields = ["=flow_id"]
