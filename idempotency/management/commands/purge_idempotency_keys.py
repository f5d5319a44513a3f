from django.core.management.base import BaseCommand

from idempotency.services import keys_purge_expired


class Command(BaseCommand):
    help = "Delete Idempotency-Key records past their expiry (IDEMPOTENCY_TTL_HOURS). Safe to run at any time."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        deleted = keys_purge_expired()
        self.stdout.write(f"Purged {deleted} expired idempotency key(s).")
