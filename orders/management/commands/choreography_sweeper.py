import logging
from importlib import import_module

from django.conf import settings
from django.core.management.base import BaseCommand

from orders.choreography import orders_sweep
from sagas.choreography import all_choreographies
from sagas.outbox import OutboxRetention
from shop.backoff import run_every
from shop.errors import broker_unavailable_errors, database_unavailable_errors

logger = logging.getLogger("orders.choreography_sweeper")


class Command(BaseCommand):
    help = ("ORDER_FLOW=choreography: fail and compensate, by events, the pending orders with no event for "
            "CHOREOGRAPHY_DEADLINE_SECONDS. Survives database restarts; stops on SIGTERM / SIGINT.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--once", action="store_true", help="sweep once and exit")
        parser.add_argument("--include", action="append", default=[], metavar="MODULE",
                            help="import MODULE first: it registers choreographies of its own; may be repeated")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        for module in options["include"]:
            import_module(module)
        if options["once"]:
            self.sweep_round()
            return
        # No saga sweeper runs in this mode: the outboxes' retention is this sweeper's too.
        retention = OutboxRetention()

        def sweep_and_purge() -> None:
            self.sweep_round()
            retention.maybe_purge()

        run_every(what="choreography sweeper", seconds=settings.CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS,
                  work=sweep_and_purge, logger=logger,
                  expected=database_unavailable_errors() + broker_unavailable_errors())
        self.stdout.write("choreography sweeper stopped")

    def sweep_round(self) -> None:
        for choreography in all_choreographies():
            if choreography.home != "orders":
                continue
            timed_out = orders_sweep(choreography=choreography)
            if timed_out:
                self.stdout.write(f"{choreography.name}: timed out order(s) {timed_out}")
