from django.core.management.base import BaseCommand, CommandError

from operations.demo import DemoSpec, seed


class Command(BaseCommand):
    help = ("Reset the demo data: customers customer1..N (password --password) with funded wallets, and "
            "products SKU-0001.. with --stock units each. Running it again resets to that state. Orders, "
            "payments, reservations, shipments, idempotency keys and the saga engine's tables (sagas, step logs, "
            "outbox, inbox, step guards, dead letters, in every service database) are emptied: stop the workers, "
            "relays and sweeper first.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        defaults = DemoSpec()
        parser.add_argument("--customers", type=int, default=defaults.customers)
        parser.add_argument("--products", type=int, default=defaults.products)
        parser.add_argument("--stock", type=int, default=defaults.stock)
        parser.add_argument("--balance-cents", type=int, default=defaults.balance_cents)
        parser.add_argument("--password", default=defaults.password)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        spec = DemoSpec(
            customers=options["customers"], products=options["products"], stock=options["stock"],
            balance_cents=options["balance_cents"], password=options["password"],
        )
        for name in ("customers", "products"):
            if getattr(spec, name) < 1:
                raise CommandError(f"--{name} must be at least 1")
        if spec.stock < 0 or spec.balance_cents < 0:
            raise CommandError("--stock and --balance-cents must not be negative")
        seed(spec)
        self.stdout.write(self.style.SUCCESS(
            f"Seeded {spec.customers} customers (customer1..customer{spec.customers}, password "
            f"{spec.password!r}, {spec.balance_cents} cents each) and {spec.products} products "
            f"(SKU-0001..SKU-{spec.products:04d}, {spec.stock} units each)."
        ))
