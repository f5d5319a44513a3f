from django.contrib import admin

from idempotency.models import IdempotencyKey
from shop.admin import ReadOnlyAdmin


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    """Read-only: a key's record is evidence of what a client was told, not something to edit."""

    list_display = ["key", "user_id", "method", "path", "state", "response_status", "created_at", "expires_at"]
    list_filter = ["state", "response_status"]
    search_fields = ["=key", "=user_id"]
    date_hierarchy = "created_at"
