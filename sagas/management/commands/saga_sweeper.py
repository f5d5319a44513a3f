import logging
from importlib import import_module

from django.conf import settings
from django.core.management.base import BaseCommand

from sagas.definitions import all_definitions
from sagas.engine import sweep
from sagas.outbox import OutboxRetention
from shop.backoff import run_every
from shop.errors import broker_unavailable_errors, database_unavailable_errors

logger = logging.getLogger("sagas.sweeper")



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
        retention = OutboxRetention()

        def sweep_and_purge() -> None:
            self.sweep_round()
            retention.maybe_purge()

        run_every(what="saga sweeper", seconds=settings.SAGA_SWEEP_INTERVAL_SECONDS, work=sweep_and_purge,
                  logger=logger, expected=database_unavailable_errors() + broker_unavailable_errors())
        self.stdout.write("saga sweeper stopped")

    def sweep_round(self) -> None:
        for definition in all_definitions():
            touched = sweep(definition=definition)
            if touched:
                self.stdout.write(f"{definition.name}: re-sent or gave up on {touched} overdue saga(s)")
