import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sagas.outbox import Relay


class Command(BaseCommand):
    help = ("Publish the outbox of one database to Celery, waking on commit (LISTEN/NOTIFY). Run several at will. "
            "Survives database and broker restarts (reconnects with backoff); stops on SIGTERM / SIGINT.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--database", default="default", help="database alias whose outbox to relay")
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--poll-seconds", type=float, default=None)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        if options["database"] not in settings.DATABASES:
            raise CommandError(f"unknown database alias {options['database']!r}")
        relay = Relay(using=options["database"], batch_size=options["batch_size"],
                      poll_seconds=options["poll_seconds"])

        def stop(signum, frame):  # type: ignore[no-untyped-def]
            relay.stop_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        relay.run()
        self.stdout.write(f"outbox relay on {relay.using} stopped after publishing {relay.published} messages")
