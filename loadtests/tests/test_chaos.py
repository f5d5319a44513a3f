"""The chaos driver's pieces, each on its own: the careful client against a small HTTP server that fails on
purpose, process supervision with real subprocesses, the private Redis restarted on its port, reading a
Celery worker's log, and the verdict checks. The full matrix is `make chaos`."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from loadtests.chaos import verdict as checks
from loadtests.chaos.load import HttpStats, Load, Mix, OrderRecord, is_retryable
from loadtests.chaos.scenarios import SCENARIOS, Context, Database, Pace
from loadtests.chaos.servers import DEFAULT_DATA_DIR, PrivateServers, ServersError, check_private
from loadtests.chaos.stack import Stack
from runtime.launcher import REPO_ROOT
from shop.testing import wait_until

# -- the careful client ---------------------------------------------------------------------------------------


class FlakyShop(BaseHTTPRequestHandler):
    """Answers the first POST of every key 503 (with Retry-After), the next one with a 500, then 202; a GET of
    the order says PENDING once, then CONFIRMED."""

    posts: dict[str, list[str]] = {}
    polls: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict, **headers: str) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/api/v1/auth/token":
            self._answer(200, {"token": "t"})
            return
        key = self.headers["Idempotency-Key"]
        with self.lock:
            seen = self.posts.setdefault(key, [])
            seen.append(key)
            attempt = len(seen)
            order_id = list(self.posts).index(key) + 1
        if attempt == 1:
            self._answer(503, {"code": "database_unavailable"}, Retry_After="1")
        elif attempt == 2:
            self._answer(500, {"code": "server_error"})
        else:
            self._answer(202, {"id": order_id, "status": "PENDING", "url": f"/api/v1/orders/{order_id}"},
                         Location=f"/api/v1/orders/{order_id}")

    def do_GET(self) -> None:
        with self.lock:
            count = self.polls[self.path] = self.polls.get(self.path, 0) + 1
        self._answer(200, {"status": "PENDING" if count == 1 else "CONFIRMED", "failure_reason": ""})


@pytest.fixture
def flaky_shop() -> Iterator[str]:
    FlakyShop.posts, FlakyShop.polls = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyShop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_careful_client_retries_with_the_same_key_and_follows_the_order(flaky_shop: str) -> None:
    load = Load(flaky_shop, clients=2, mix=Mix.default(), think=(0.0, 0.05))
    load.start()
    assert wait_until(lambda: sum(r.final for r in load.records) >= 4, timeout=30), \
        [(r.outcome, r.answers) for r in load.records]
    load.stop(give_up_at=time.monotonic() + 20)
    load.join()

    finished = [r for r in load.records if r.final]
    assert all(r.outcome == "CONFIRMED" for r in finished), [(r.outcome, r.answers) for r in finished]
    # Each order: 503, then 500, then 202, always with its own key, and never a second key for one order.
    assert all(r.answers == ["503 database_unavailable", "500 server_error", "202"] for r in finished), \
        [r.answers for r in finished]
    assert all(len(FlakyShop.posts[r.key]) == 3 for r in finished), FlakyShop.posts
    assert len({r.key for r in load.records}) == len(load.records)
    assert load.http.count(500) >= len(finished)
    assert checks.check_no_server_errors(load.http) is not None
    # The 503 carried Retry-After: nothing to report there.
    assert checks.check_retry_after(load.http) is None, load.http.without_retry_after


def test_what_a_careful_client_sends_again() -> None:
    assert is_retryable(503, "database_unavailable")
    assert is_retryable(409, "idempotency_key_in_use")
    assert is_retryable(500, "")
    assert is_retryable(429, "throttled")
    # Stored business outcomes: sending them again only replays them.
    assert not is_retryable(503, "payment_unavailable")
    assert not is_retryable(409, "out_of_stock")
    assert not is_retryable(402, "payment_declined")
    assert not is_retryable(422, "undeliverable")


# -- processes ------------------------------------------------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
QUITTER = [sys.executable, "-c", "import sys; print('CRITICAL worker: Unrecoverable error', flush=True); sys.exit(3)"]


def test_stack_counts_only_deaths_it_did_not_cause_and_restarts_them(tmp_path: Path) -> None:
    stack = Stack({"PATH": "/usr/bin:/bin"}, tmp_path)
    try:
        stack.start("sleeper", SLEEPER)
        first = stack.children["sleeper"].proc.pid
        stack.kill("sleeper")
        assert not stack.running("sleeper")
        stack.start("sleeper", SLEEPER)
        assert stack.children["sleeper"].proc.pid != first
        assert stack.children["sleeper"].starts == 2
        stack.start("quitter", QUITTER)
        # The supervisor records the exit and starts it again (and again: it keeps exiting).
        assert wait_until(lambda: stack.children["quitter"].starts >= 2, timeout=15), stack.unexpected_exits
        time.sleep(0.5)  # the sleeper would have been counted by now if a kill counted
        assert {e.name for e in stack.unexpected_exits} == {"quitter"}, stack.unexpected_exits
        assert stack.unexpected_exits[0].returncode == 3
        summary = stack.exits_summary()
        assert "quitter exited" in summary and "exit 3" in summary, summary
        assert "last log error: CRITICAL worker: Unrecoverable error" in summary, summary
        assert (tmp_path / "sleeper.1.log").exists() and (tmp_path / "sleeper.2.log").exists()
        assert wait_until(lambda: "up" in stack.log_text("sleeper"), timeout=10)
        stack.freeze("sleeper")
        stack.thaw("sleeper")
        assert stack.running("sleeper")
    finally:
        stack.close()
    assert not stack.running("sleeper") and not stack.running("quitter")


def test_worker_log_shows_what_was_in_flight_and_what_came_back(tmp_path: Path) -> None:
    stack = Stack({}, tmp_path)
    try:
        a, b, c = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", \
            "33333333-3333-3333-3333-333333333333"
        (tmp_path / "payments.1.log").write_text(
            f"[2026-01-01 10:00:00,000: INFO/MainProcess] Task payments.charge[{a}] received\n"
            f"[2026-01-01 10:00:00,100: INFO/MainProcess] Task payments.charge[{b}] received\n"
            f"[2026-01-01 10:00:00,900: INFO/ForkPoolWorker-1] Task payments.charge[{a}] succeeded in 0.8s: None\n"
            f"[2026-01-01 10:00:01,000: INFO/MainProcess] Task payments.refund[{c}] received\n")
        (tmp_path / "payments.2.log").write_text(
            f"[2026-01-01 10:01:01,000: INFO/MainProcess] Task payments.charge[{b}] received\n")
        ctx = Context("t", Pace.short(), PrivateServers(tmp_path / "servers"), stack, Database("postgresql:///x"), "")
        assert ctx.in_flight("payments", 1) == {b: "payments.charge", c: "payments.refund"}
        assert ctx.in_flight("payments", 1, "payments.charge") == {b: "payments.charge"}
        assert [event for _, event in ctx.tasks_in_log("payments", 2)[b]] == ["received"]
        assert [event for _, event in ctx.tasks_in_log("payments")[b]] == ["received", "received"]
    finally:
        stack.close()


# -- the private servers --------------------------------------------------------------------------------------


def test_the_shared_data_folder_is_refused() -> None:
    with pytest.raises(ServersError):
        check_private(REPO_ROOT / ".data")
    with pytest.raises(ServersError):
        check_private(REPO_ROOT)
    assert check_private(DEFAULT_DATA_DIR) == DEFAULT_DATA_DIR.resolve()


def test_one_chaos_run_per_data_folder(tmp_path: Path) -> None:
    first, second = PrivateServers(tmp_path), PrivateServers(tmp_path)
    first.claim()
    with pytest.raises(ServersError, match="another chaos run"):
        second.claim()
    second.stop()  # claimed nothing, so stops nothing (the first run's servers are not its own)
    assert first._lock is not None and second._lock is None
    first._lock.close()


def test_private_redis_comes_back_on_its_port_with_its_queue(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    servers = PrivateServers(tmp_path)
    servers.start_redis()
    try:
        url = servers.redis_url
        client = redis.Redis.from_url(url)
        client.lpush("queue", "a message")
        servers.stop_redis()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        servers.start_redis()
        assert servers.redis_url == url
        # Append-only file: a queued message survives the restart, as a broker's must.
        assert redis.Redis.from_url(url).lrange("queue", 0, -1) == [b"a message"]
    finally:
        servers.stop_redis()


# -- verdicts -------------------------------------------------------------------------------------------------


def _record(outcome: str, *, reason: str = "", token: str = "tok_ok", order_id: int | None = 1) -> OrderRecord:
    record = OrderRecord("customer1", f"key-{outcome}-{order_id}", token, "GB", 0.0, order_id=order_id)
    record.outcome, record.failure_reason = outcome, reason
    return record


def test_verdict_line_names_what_fell_short() -> None:
    verdict = checks.Verdict("broker-outage")
    verdict.check(None)
    assert verdict.line() == "broker-outage: holds"
    records = [_record("CONFIRMED", order_id=1), _record("FAILED", reason="step_timeout", order_id=2),
               _record("FAILED", reason="payment_declined", token="tok_decline", order_id=3),
               _record("unresolved", order_id=4)]
    verdict.check(checks.check_expected_outcomes(records))
    verdict.check(checks.check_final_in_time(records, 45))
    verdict.check(checks.check_api_matches_database(records, {1: "CONFIRMED", 2: "PENDING", 3: "FAILED"}))
    verdict.check(checks.check_audit(1, ["I1 money       FAIL  1 violation(s): failed order 2 is still charged 500",
                                         "I2 stock       OK    10 SKUs"]))
    line = verdict.line()
    assert line.startswith("broker-outage: falls short: "), line
    assert "1 order(s) that would otherwise succeed did not (1 step_timeout): order 2 FAILED (step_timeout)" in line
    assert "1 order(s) not final 45s after the fault ended: order 4 unresolved" in line
    assert "order 2: client saw FAILED, database PENDING" in line
    assert "audit exit 1: I1 money       FAIL  1 violation(s): failed order 2 is still charged 500" in line
    assert checks.check_expected_outcomes(records, allowed_reasons=("step_timeout",)) is None


def test_saga_answers_and_server_errors_are_counted() -> None:
    accepted = _record("FAILED", reason="payment_declined", token="tok_decline")
    accepted.answers = ["connection error", "201"]
    assert "answered 201 instead of 202" in (checks.check_saga_answers([accepted]) or "")
    http = HttpStats()
    assert checks.check_no_server_errors(http) is None
    http.server_errors += ["GET /api/v1/products 500 'x'", "POST /api/v1/orders 500 'y'", "GET /api/v1/products 500 ''"]
    assert checks.check_no_server_errors(http) == \
        "3 answer(s) were 500 (2 on GET /api/v1/products, 1 on POST /api/v1/orders)"


def test_every_scenario_of_the_matrix_is_there() -> None:
    names = [s.name for s in SCENARIOS]
    assert names == ["worker-sigkill", "relay-sigkill", "two-relays", "redis-restart", "postgres-restart-atomic",
                     "postgres-restart-saga", "participant-late", "poison-message", "broker-outage"]
    assert {s.mode for s in SCENARIOS} == {"atomic", "saga"}
