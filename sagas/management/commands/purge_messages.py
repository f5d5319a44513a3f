from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sagas.housekeeping import Retention, duplicate_horizon, messages_purge


class Command(BaseCommand):
    help = (
        "Delete what the saga engine keeps only as history, in every database: published outbox rows older "
        "than OUTBOX_RETENTION_HOURS, and inbox rows, step guards (tombstones) and re-driven dead letters older "
        "than INBOX_RETENTION_HOURS. Run it from cron. An inbox row is what makes a duplicate of its message "
        "harmless, so it must outlive every duplicate that could still arrive: longer than the broker's "
        "visibility timeout plus the sweeper's re-sends (the saga deadline), and longer than any outage during "
        "which messages wait in a queue. A retention below saga deadline + visibility timeout is refused."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--outbox-hours", type=float, default=None,
                            help=f"instead of OUTBOX_RETENTION_HOURS ({settings.OUTBOX_RETENTION_HOURS})")
        parser.add_argument("--inbox-hours", type=float, default=None,
                            help=f"instead of INBOX_RETENTION_HOURS ({settings.INBOX_RETENTION_HOURS})")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        default = Retention.from_settings()
        retention = Retention(
            outbox=default.outbox if options["outbox_hours"] is None else timedelta(hours=options["outbox_hours"]),
            inbox=default.inbox if options["inbox_hours"] is None else timedelta(hours=options["inbox_hours"]),
        )
        if retention.outbox < timedelta(0):
            raise CommandError("--outbox-hours must not be negative")
        try:
            counts = messages_purge(retention=retention, dry_run=options["dry_run"])
        except ValueError as exc:
            raise CommandError(f"{exc}; the least allowed is {duplicate_horizon().total_seconds() / 3600:.2f} "
                               "hours") from exc
        verb = "would delete" if options["dry_run"] else "deleted"
        for (alias, table), count in counts.items():
            self.stdout.write(f"{alias:<10} {table:<26} {verb} {count}")
        self.stdout.write(self.style.SUCCESS(f"{verb} {sum(counts.values())} rows in total"))
