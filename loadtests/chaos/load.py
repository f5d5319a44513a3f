"""Careful clients: a few threads placing orders through the real HTTP API while the faults happen.

Each order gets a fresh Idempotency-Key. The client sends it again, same key and same body, after a
connection error, a timeout, a 5xx other than the stored `payment-unavailable` outcome, a 409
`idempotency-key-in-use` or a 429, waiting Retry-After (capped) or a backoff, as DESIGN.md and the README tell
a client to; then it polls an accepted order until CONFIRMED or FAILED. Every answer is counted, so the
verdicts can say how many 500s there were and on which endpoint.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import requests

ORDERS = "/api/v1/orders"
FINAL = ("CONFIRMED", "FAILED")
ADDRESS = {"name": "Chaos Tester", "line1": "1 Fault Line", "city": "London", "postal_code": "N1 9GU"}
# Outcomes the shop stores for the key: sending the same request again only replays them.
BUSINESS_PROBLEMS = {
    402: {"payment_declined", "insufficient_funds"},
    409: {"out_of_stock"},
    422: {"undeliverable"},
    503: {"payment_unavailable"},
}
RETRY_AFTER_CAP_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 15.0


def problem_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


def is_retryable(status: int, code: str) -> bool:
    """What a careful client sends again with the same key."""
    if status in (409, 503) and code in BUSINESS_PROBLEMS[status]:
        return False
    return status in (409, 429) or status >= 500


@dataclass
class OrderRecord:
    customer: str
    key: str
    token: str
    country: str
    started: float  # time.monotonic()
    answers: list[str] = field(default_factory=list)  # "202", "503 concurrency_conflict", "connection error"
    answer_times: list[float] = field(default_factory=list)  # time.monotonic() of each answer
    order_id: int | None = None
    outcome: str = ""  # CONFIRMED, FAILED, rejected:<code>, unanswered, unresolved
    failure_reason: str = ""
    finished: float | None = None

    @property
    def would_succeed(self) -> bool:
        """Nothing in the request itself makes it fail (a declined card or an undeliverable address would)."""
        return self.token in ("tok_ok", "tok_flaky") and self.country != "XX"

    @property
    def final(self) -> bool:
        return self.outcome in FINAL or self.outcome.startswith("rejected:")


@dataclass
class HttpStats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    by_status: Counter = field(default_factory=Counter)  # (endpoint, status) -> count
    server_errors: list[str] = field(default_factory=list)  # "POST /api/v1/orders 500 <detail>"
    without_retry_after: list[str] = field(default_factory=list)  # transient 503s lacking the header
    connection_errors: int = 0

    def record(self, method: str, endpoint: str, response: requests.Response) -> None:
        with self.lock:
            self.by_status[(f"{method} {endpoint}", response.status_code)] += 1
            if response.status_code == 500:
                self.server_errors.append(f"{method} {endpoint} 500 {response.text[:80]!r}")
            code = problem_code(response)
            if response.status_code == 503 and code != "payment_unavailable" \
                    and "Retry-After" not in response.headers:
                self.without_retry_after.append(f"{method} {endpoint} 503 {code or response.text[:60]!r}")

    def connection_error(self) -> None:
        with self.lock:
            self.connection_errors += 1

    def count(self, status: int) -> int:
        return sum(n for (_, s), n in self.by_status.items() if s == status)


@dataclass
class Mix:
    tokens: dict[str, float]
    undeliverable_share: float = 0.0
    products: int = 10

    @classmethod
    def default(cls) -> Mix:
        return cls({"tok_ok": 0.8, "tok_decline": 0.1, "tok_flaky": 0.1}, undeliverable_share=0.03)

    @classmethod
    def all_good(cls) -> Mix:
        return cls({"tok_ok": 1.0})

    def order(self, rng: random.Random) -> tuple[dict, str, str]:
        token = rng.choices(list(self.tokens), weights=list(self.tokens.values()))[0]
        country = "XX" if rng.random() < self.undeliverable_share else "GB"
        skus = sorted({f"SKU-{rng.randint(1, self.products):04d}" for _ in range(rng.randint(1, 2))})
        body = {"lines": [{"sku": sku, "quantity": rng.randint(1, 2)} for sku in skus],
                "payment": {"token": token}, "shipping_address": {**ADDRESS, "country": country}}
        return body, token, country


class Load:
    """`clients` customers, each placing orders until stopped while a second thread of its own follows the
    accepted ones (so placing goes on while earlier orders wait out a fault, as many shoppers would).

    `stop()` ends the placing of new orders; an order already started is still retried and polled until it
    is final or `give_up_at` (time.monotonic()) passes."""

    def __init__(self, base_url: str, *, clients: int, mix: Mix, password: str = "password",
                 think: tuple[float, float] = (0.2, 0.6), seed: int = 0) -> None:
        self.base_url = base_url
        self.clients = clients
        self.mix = mix
        self.password = password
        self.think = think
        self.seed = seed
        self.http = HttpStats()
        self.records: list[OrderRecord] = []
        self.records_lock = threading.Lock()
        self.login_errors: list[str] = []
        self.give_up_at = float("inf")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(1, self.clients + 1):
            thread = threading.Thread(target=self._run, args=(f"customer{n}", self.seed * 1000 + n),
                                      name=f"chaos-client-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, give_up_at: float) -> None:
        self.give_up_at = give_up_at
        self._stop.set()

    def join(self) -> None:
        for thread in list(self._threads):
            thread.join(max(0.1, self.give_up_at - time.monotonic() + REQUEST_TIMEOUT_SECONDS + 5))

    def placed_since(self, since: float) -> list[OrderRecord]:
        with self.records_lock:
            return [r for r in self.records if r.started >= since]

    # -- one client -----------------------------------------------------------------------------------------

    def _run(self, customer: str, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        token = self._login(session, customer)
        if token is None:
            return
        session.headers["Authorization"] = f"Token {token}"
        following: list[OrderRecord] = []
        lock = threading.Lock()
        placing_done = threading.Event()
        follower = threading.Thread(target=self._follow_all, args=(token, following, lock, placing_done),
                                    name=f"chaos-follower-{customer}", daemon=True)
        follower.start()
        self._threads.append(follower)
        try:
            while not self._stop.is_set():
                body, pay_token, country = self.mix.order(rng)
                record = OrderRecord(customer, str(uuid.uuid4()), pay_token, country, time.monotonic())
                with self.records_lock:
                    self.records.append(record)
                self._place(session, record, body)
                if record.order_id is not None and record.outcome not in FINAL:
                    with lock:
                        following.append(record)
                self._stop.wait(rng.uniform(*self.think))
        finally:
            placing_done.set()

    def _login(self, session: requests.Session, customer: str) -> str | None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                response = session.post(f"{self.base_url}/api/v1/auth/token",
                                        json={"username": customer, "password": self.password},
                                        timeout=REQUEST_TIMEOUT_SECONDS)
            except requests.RequestException:
                self.http.connection_error()
                time.sleep(0.5)
                continue
            self.http.record("POST", "/api/v1/auth/token", response)
            if response.status_code == 200:
                return str(response.json()["token"])
            if response.status_code < 500:
                self.login_errors.append(f"{customer}: {response.status_code} {response.text[:100]}")
                return None
            time.sleep(0.5)
        self.login_errors.append(f"{customer}: no login within 60 s")
        return None

    def _pause(self, attempt: int, response: requests.Response | None) -> None:
        wait = min(0.1 * 2 ** attempt, 1.0)
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            wait = min(float(response.headers["Retry-After"]), RETRY_AFTER_CAP_SECONDS)
        time.sleep(wait * random.uniform(0.8, 1.2))

    def _place(self, session: requests.Session, record: OrderRecord, body: dict) -> None:
        headers = {"Idempotency-Key": record.key}
        attempt = 0
        while time.monotonic() < self.give_up_at:
            attempt += 1
            try:
                response = session.post(f"{self.base_url}{ORDERS}", json=body, headers=headers,
                                        timeout=REQUEST_TIMEOUT_SECONDS)
            except requests.RequestException:
                self.http.connection_error()
                record.answers.append("connection error")
                record.answer_times.append(time.monotonic())
                self._pause(attempt, None)
                continue
            self.http.record("POST", ORDERS, response)
            code = problem_code(response)
            record.answers.append(f"{response.status_code} {code}".strip())
            record.answer_times.append(time.monotonic())
            if response.status_code in (201, 202):
                order = response.json()
                record.order_id = int(order["id"])
                if order.get("status") in FINAL:
                    self._finish(record, order)
                return
            if is_retryable(response.status_code, code):
                self._pause(attempt, response)
                continue
            record.outcome = f"rejected:{code or response.status_code}"
            record.finished = time.monotonic()
            return
        record.outcome = "unanswered"

    def _follow_all(self, token: str, following: list[OrderRecord], lock: threading.Lock,
                     placing_done: threading.Event) -> None:
        """Poll this customer's accepted orders until each is CONFIRMED or FAILED (or the give-up time)."""
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        while True:
            with lock:
                open_ = [r for r in following if r.outcome not in FINAL]
            if not open_ and placing_done.is_set():
                return
            if time.monotonic() >= self.give_up_at:
                for record in open_:
                    record.outcome = "unresolved"
                return
            for record in open_:
                try:
                    response = session.get(f"{self.base_url}{ORDERS}/{record.order_id}",
                                           timeout=REQUEST_TIMEOUT_SECONDS)
                except requests.RequestException:
                    self.http.connection_error()
                    continue
                self.http.record("GET", f"{ORDERS}/{{id}}", response)
                if response.status_code == 200 and response.json().get("status") in FINAL:
                    self._finish(record, response.json())
            time.sleep(0.25)

    @staticmethod
    def _finish(record: OrderRecord, order: dict) -> None:
        record.outcome = order["status"]
        record.failure_reason = order.get("failure_reason") or ""
        record.finished = time.monotonic()
