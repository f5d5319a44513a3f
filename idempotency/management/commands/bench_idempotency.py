"""Order throughput through the real API view with the Idempotency-Key handling on and off.

In-process (the Django test client, so no network or web server in the figures), ORDER_FLOW=atomic, on
freshly seeded demo data. The two modes take turns in small batches, so that drift and noise (a warming
cache, a growing table, a neighbour's load on the machine) fall on both alike.
"""

from __future__ import annotations

import time
import uuid
from itertools import cycle

from django.core.management.base import BaseCommand, CommandError
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from operations.demo import DemoSpec, customer_username, product_price_cents, product_sku, seed
from shop.testing import order_body

PRODUCTS = 20
WARMUP_ORDERS = 50


class Command(BaseCommand):
    help = ("Measure order throughput (atomic flow, in-process API calls) with the Idempotency-Key handling on "
            "and off, and print both rates and their ratio. Resets the demo data, like `manage.py seed`.")

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--orders", type=int, default=1000, help="orders per mode")
        parser.add_argument("--batch", type=int, default=25, help="orders in a row before the modes swap")
        parser.add_argument("--customers", type=int, default=20)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        orders, batch, customers = options["orders"], options["batch"], options["customers"]
        if min(orders, batch, customers) < 1:
            raise CommandError("--orders, --batch and --customers must be at least 1")
        total = WARMUP_ORDERS * 2 + orders * 2
        max_price = max(product_price_cents(n) for n in range(1, PRODUCTS + 1))
        spec = DemoSpec(customers=customers, products=PRODUCTS, stock=total // PRODUCTS + 1,
                        balance_cents=max_price * (total // customers + 1))
        # No random declines, faults or latency: every order must succeed, and the cost of the key handling
        # must not hide behind a simulated gateway's sleep.
        with override_settings(ORDER_FLOW="atomic", ALLOWED_HOSTS=["testserver"], PAYMENT_DECLINE_RATE=0.0,
                               PAYMENT_FAULT_RATE=0.0, PAYMENT_LATENCY_MS=0):
            seed(spec)
            bench = _Bench(customers)
            bench.run(keyed=True, orders=WARMUP_ORDERS)
            bench.run(keyed=False, orders=WARMUP_ORDERS)
            seconds = {True: 0.0, False: 0.0}
            for start in range(0, orders, batch):
                # Either mode goes first every other batch: neither always runs on the other's leftovers.
                first = start // batch % 2 == 0
                for keyed in (first, not first):
                    seconds[keyed] += bench.run(keyed=keyed, orders=min(batch, orders - start))
        seed(DemoSpec())
        off, on = orders / seconds[False], orders / seconds[True]
        self.stdout.write(f"{orders} orders per mode in batches of {batch}, atomic flow, {customers} customers, "
                          "in-process API calls")
        self.stdout.write(f"without Idempotency-Key handling: {off:8.1f} orders/s")
        self.stdout.write(f"with Idempotency-Key handling:    {on:8.1f} orders/s")
        self.stdout.write(f"ratio with/without: {on / off:.3f} (cost {100 * (1 - on / off):.1f}% of throughput)")


class _Bench:
    def __init__(self, customers: int) -> None:
        clients = []
        for n in range(1, customers + 1):
            client = APIClient()
            token = Token.objects.get(user__username=customer_username(n))
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
            clients.append(client)
        self._clients = cycle(clients)
        self._skus = cycle(product_sku(n) for n in range(1, PRODUCTS + 1))

    def run(self, *, keyed: bool, orders: int) -> float:
        """Place `orders` orders one after another; return the seconds they took."""
        bodies = [order_body([(next(self._skus), 1)]) for _ in range(orders)]
        with override_settings(IDEMPOTENCY_KEY_REQUIRED=keyed):
            started = time.perf_counter()
            for body in bodies:
                extra = {"HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex} if keyed else {}
                response = next(self._clients).post("/api/v1/orders", body, format="json", **extra)
                if response.status_code != 201:
                    raise CommandError(f"an order failed: {response.status_code} {response.content[:300]!r}")
            return time.perf_counter() - started
