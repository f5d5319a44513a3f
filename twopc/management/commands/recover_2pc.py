import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from shop.backoff import run_every
from shop.errors import database_unavailable_errors
from twopc.checks import require_prepared_transactions
from twopc.recovery import recover

logger = logging.getLogger("twopc.recovery")


class Command(BaseCommand):
    help = ("Resolve in-doubt two-phase branches (ORDER_FLOW=2pc): COMMIT PREPARED what the coordinator log "
            "decided to commit, ROLLBACK PREPARED the rest once older than TWOPC_RECOVERY_GRACE_SECONDS "
            "(presumed abort). Runs until SIGTERM / SIGINT, surviving database restarts; --once for one round.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--once", action="store_true", help="one round, then exit")
        parser.add_argument("--grace", type=float, default=None,
                            help="seconds before an undecided branch is rolled back (default: the setting)")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        try:
            require_prepared_transactions()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if options["once"]:
            self.round(options["grace"])
            return
        run_every(what="2pc recovery", seconds=settings.TWOPC_RECOVERY_INTERVAL_SECONDS,
                  work=lambda: self.round(options["grace"]), logger=logger, expected=database_unavailable_errors())
        self.stdout.write("2pc recovery stopped")

    def round(self, grace: float | None) -> None:
        for resolution in recover(grace_seconds=grace):
            if resolution.action != "wait":
                self.stdout.write(resolution.line())
