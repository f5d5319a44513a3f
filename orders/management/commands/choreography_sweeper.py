import logging
import signal
import threading
from importlib import import_module

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from orders.choreography import orders_sweep
from sagas.choreography import all_choreographies
from shop.backoff import Survivor
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
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        if options["once"]:
            self.sweep_round()
            return

        def round_then_wait() -> None:
            self.sweep_round()
            stop.wait(settings.CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS)

        logger.info("choreography sweeper: every %ss", settings.CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS)
        Survivor(what="choreography sweeper", logger=logger, stop=stop, disconnect=connections.close_all,
                 expected=database_unavailable_errors() + broker_unavailable_errors()).run(round_then_wait)
        connections.close_all()
        self.stdout.write("choreography sweeper stopped")

    def sweep_round(self) -> None:
        for choreography in all_choreographies():
            if choreography.home != "orders":
                continue
            timed_out = orders_sweep(choreography=choreography)
            if timed_out:
                self.stdout.write(f"{choreography.name}: timed out order(s) {timed_out}")
