"""The shoppers: log in once, browse, place orders, and follow each order until it is final.

    locust -f loadtests/locustfile.py --headless -u 20 -r 10 -t 45s --host http://127.0.0.1:8000

The mix (hot SKU, payment tokens, undeliverable addresses, replays) comes from LOAD_* variables, see
loadtests/mix.py; the comparison driver sets them. Besides HTTP latency, the time from POST to a final order
status is reported as request type FINAL, named by outcome ("order confirmed", "order failed: out_of_stock"),
so Locust's own statistics show it and count outcomes. Expected business failures are successes for Locust;
anything else (a 500, an unexpected 4xx, a replay that differs from the first answer) is a failure.

With LOAD_SAMPLES_PATH set, every request (FINAL included) is also written there as one CSV row, so the
report can compute exact percentiles and distributions instead of reading Locust's rounded buckets.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import time
import uuid
from urllib.parse import urlsplit

import locust.stats
from locust import FastHttpUser, between, events, task
from locust.exception import StopUser

from loadtests.mix import LoadMix

# The driver shows progress from the CSV history; Locust's default flushes it only every 10 seconds.
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 2

MIX = LoadMix.from_env()

ORDERS = "/api/v1/orders"
ORDER_DETAIL = "/api/v1/orders/{id}"
REPLAY = "/api/v1/orders (replay)"
# Backpressure: a 503 `overloaded` is the shop refusing work it cannot finish; a careful client waits for
# Retry-After and sends the same request with the same key again. Counted apart from errors and outcomes.
OVERLOADED = "/api/v1/orders (503 overloaded)"
# The same for a lock wait past its bound (2pc mode: a hot SKU's row held by prepared branches).
CONFLICT = "/api/v1/orders (503 concurrency-conflict)"
REFUSALS = {"overloaded": OVERLOADED, "concurrency_conflict": CONFLICT}
OVERLOADED_RETRIES = 5
FINAL = "FINAL"
HOT_SKU = "SKU-0001"
# The problem codes a correct shop answers in the atomic flow (DESIGN.md section 10): business outcomes, not
# errors. The same status with another code (an idempotency conflict, say) is unexpected.
EXPECTED_PROBLEMS = {
    402: {"payment_declined", "insufficient_funds"},
    409: {"out_of_stock"},
    422: {"undeliverable"},
    503: {"payment_unavailable"},
}
ADDRESS = {"name": "Load Tester", "line1": "1 Benchmark Rd", "city": "London", "postal_code": "N1 9GU"}

_customer_numbers = itertools.count()
_samples: list[tuple[float, str, str, float, int]] = []


@events.request.add_listener
def _record_sample(request_type: str, name: str, response_time: float, exception: BaseException | None,
                   **kwargs: object) -> None:
    _samples.append((time.time(), request_type, name, response_time, int(exception is None)))


@events.quitting.add_listener
def _write_samples(environment: object, **kwargs: object) -> None:
    path = os.environ.get("LOAD_SAMPLES_PATH")
    if not path:
        return
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "type", "name", "response_time_ms", "ok"])
        writer.writerows((f"{ts:.3f}", kind, name, f"{ms:.2f}", ok) for ts, kind, name, ms, ok in _samples)


def _problem_code(response) -> str:  # type: ignore[no-untyped-def]
    try:
        return str(response.json().get("code", ""))
    except (ValueError, AttributeError):
        return ""


class Shopper(FastHttpUser):
    wait_time = between(MIX.think_min, MIX.think_max)

    def on_start(self) -> None:
        # Users are spread over the seeded customers in turn, so each wallet sees a similar share of orders.
        self.username = f"customer{next(_customer_numbers) % MIX.customers + 1}"
        with self.client.post("/api/v1/auth/token", json={"username": self.username, "password": MIX.password},
                              name="/api/v1/auth/token", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"login as {self.username} answered {response.status_code}")
                raise StopUser()
            self.headers = {"Authorization": f"Token {response.json()['token']}"}

    @task(2)
    def browse(self) -> None:
        self.client.get("/api/v1/products", name="/api/v1/products")

    @task(1)
    def my_orders(self) -> None:
        self.client.get(ORDERS, headers=self.headers, name=f"{ORDERS} (list)")

    @task(6)
    def place_order(self) -> None:
        body = self._order_body()
        headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
        started = time.perf_counter()
        for _ in range(OVERLOADED_RETRIES + 1):
            with self.client.post(ORDERS, json=body, headers=headers, name=ORDERS, catch_response=True) as response:
                status, content = response.status_code, response.content
                code = _problem_code(response) if status == 503 else None
                if code in REFUSALS:
                    response.request_meta["name"] = REFUSALS[code]  # counted apart from the orders placed
                    response.success()
                    self._wait_retry_after(response)
                    outcome = f"refused: {code}"
                    continue
                outcome = self._classify(response)
                break
        if outcome is not None and outcome.startswith("refused: "):
            self._report_final(started, outcome)
            return
        if outcome == "pending":
            self._report_final(started, self._follow(response))
        elif outcome is not None:
            self._report_final(started, outcome)
        if random.random() < MIX.replay_share:
            self._replay(body, headers, status, content)

    def _order_body(self) -> dict:
        others = [f"SKU-{n:04d}" for n in range(2, MIX.products + 1)] or [HOT_SKU]
        first = HOT_SKU if random.random() < MIX.hot_sku_share else random.choice(others)
        skus = {first}
        if random.random() < 0.2:
            skus.add(random.choice(others))
        tokens = list(MIX.token_shares)
        token = random.choices(tokens, weights=[MIX.token_shares[t] for t in tokens])[0]
        country = "XX" if random.random() < MIX.undeliverable_share else "GB"
        return {
            "lines": [{"sku": sku, "quantity": random.randint(1, 3)} for sku in sorted(skus)],
            "payment": {"token": token},
            "shipping_address": {**ADDRESS, "country": country},
        }

    def _classify(self, response) -> str | None:  # type: ignore[no-untyped-def]
        """'confirmed', 'failed: <reason>', 'pending' (poll it), or None for an unexpected answer."""
        status = response.status_code
        if status == 201:
            response.success()
            return "confirmed"
        if status == 202:
            response.success()
            return "pending"
        code = _problem_code(response)
        if code in EXPECTED_PROBLEMS.get(status, ()):
            response.success()
            return f"failed: {code}"
        response.failure(f"unexpected {status} {code or (response.text or '')[:120]}")
        return None

    @staticmethod
    def _wait_retry_after(response) -> None:  # type: ignore[no-untyped-def]
        try:
            wait = float(response.headers.get("Retry-After") or 1)
        except ValueError:
            wait = 1.0
        time.sleep(min(wait, 5.0))

    def _follow(self, response) -> str:  # type: ignore[no-untyped-def]
        """Poll a 202's order until CONFIRMED or FAILED; 'unresolved' when the poll bound runs out."""
        location = response.headers.get("Location") or response.json()["url"]
        path = urlsplit(location).path
        deadline = time.perf_counter() + MIX.poll_timeout
        interval = MIX.poll_interval
        while time.perf_counter() < deadline:
            time.sleep(interval)
            interval = min(interval * 1.5, MIX.poll_max_interval)
            with self.client.get(path, headers=self.headers, name=ORDER_DETAIL, catch_response=True) as poll:
                if poll.status_code != 200:
                    poll.failure(f"polling the order answered {poll.status_code}")
                    return "unresolved"
                order = poll.json()
            if order["status"] == "CONFIRMED":
                return "confirmed"
            if order["status"] == "FAILED":
                return f"failed: {order.get('failure_reason') or 'unknown'}"
        return "unresolved"

    def _report_final(self, started: float, outcome: str) -> None:
        exception = None
        if outcome == "unresolved":
            exception = TimeoutError(f"order not final after {MIX.poll_timeout:g}s of polling")
        self.environment.events.request.fire(
            request_type=FINAL, name=f"order {outcome}", response_time=(time.perf_counter() - started) * 1000,
            response_length=0, exception=exception, context={},
        )

    def _replay(self, body: dict, headers: dict[str, str], status: int, content: bytes | None) -> None:
        with self.client.post(ORDERS, json=body, headers=headers, name=REPLAY, catch_response=True) as response:
            replayed = (response.headers.get("Idempotent-Replayed") or "").lower() == "true"
            if response.status_code != status:
                response.failure(f"replay answered {response.status_code}, the first answer was {status}")
            elif not replayed:
                response.failure("replay was not marked Idempotent-Replayed: true")
            elif response.content != content:
                response.failure("replay body differs from the first answer")
            else:
                response.success()
