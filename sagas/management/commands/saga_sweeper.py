import logging
import time
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.core.management.base import BaseCommand

from sagas.definitions import all_definitions
from sagas.engine import sweep
from sagas.outbox import outbox_purge
from shop.backoff import run_every
from shop.errors import broker_unavailable_errors, database_unavailable_errors

logger = logging.getLogger("sagas.sweeper")

PURGE_EVERY_SECONDS = 600.0


class Command(BaseCommand):
    help = ("Re-send the current command of sagas past their step deadline; purge old published outbox rows. "
            "Survives database restarts (reconnects with backoff); stops on SIGTERM / SIGINT.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--once", action="store_true", help="sweep once and exit")
        parser.add_argument("--include", action="append", default=[], metavar="MODULE",
                            help="import MODULE first: it registers saga definitions of its own (as a Celery "
                                 "worker's --include does); may be repeated")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        for module in options["include"]:
            import_module(module)
        if options["once"]:
            self.sweep_round()
            return
        purged_at = float("-inf")

        def sweep_and_purge() -> None:
            nonlocal purged_at
            self.sweep_round()
            if time.monotonic() - purged_at >= PURGE_EVERY_SECONDS:
                retention = timedelta(hours=settings.OUTBOX_RETENTION_HOURS)
                for alias in settings.DATABASES:
                    outbox_purge(using=alias, older_than=retention)
                purged_at = time.monotonic()

        run_every(what="saga sweeper", seconds=settings.SAGA_SWEEP_INTERVAL_SECONDS, work=sweep_and_purge,
                  logger=logger, expected=database_unavailable_errors() + broker_unavailable_errors())
        self.stdout.write("saga sweeper stopped")

    def sweep_round(self) -> None:
        for definition in all_definitions():
            touched = sweep(definition=definition)
            if touched:
                self.stdout.write(f"{definition.name}: re-sent or gave up on {touched} overdue saga(s)")
