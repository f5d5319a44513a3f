"""What the shop's admin pages share."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows of the engine and the ledger: shown, never added, edited or deleted by hand.

    A hand-made order, payment or outbox row would bypass every invariant the services keep (and an empty form
    is an IntegrityError); changes go through the admin actions that call those services (retry, re-drive,
    republish)."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
