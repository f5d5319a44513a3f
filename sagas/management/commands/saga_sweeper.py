import signal
import threading
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from sagas.definitions import all_definitions
from sagas.engine import sweep
from sagas.outbox import outbox_purge


class Command(BaseCommand):
    help = "Re-send the current command of sagas past their step deadline; purge old published outbox rows."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--once", action="store_true", help="sweep once and exit")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        retention = timedelta(hours=settings.OUTBOX_RETENTION_HOURS)
        rounds = 0
        while not stop.is_set():
            for definition in all_definitions():
                touched = sweep(definition=definition)
                if touched:
                    self.stdout.write(f"{definition.name}: re-sent or gave up on {touched} overdue saga(s)")
            if rounds % 600 == 0:
                for alias in settings.DATABASES:
                    outbox_purge(using=alias, older_than=retention)
            rounds += 1
            if options["once"]:
                break
            stop.wait(settings.SAGA_SWEEP_INTERVAL_SECONDS)
