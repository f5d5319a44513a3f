"""Helpers for tests and benchmarks that place orders."""

from __future__ import annotations

ADDRESS = {"name": "Ada Lovelace", "line1": "1 Analytical St", "city": "London", "postal_code": "N1 9GU",
           "country": "GB"}


def order_body(lines: list[tuple[str, int]], *, token: str = "tok_ok", country: str = "GB") -> dict:
    return {
        "lines": [{"sku": sku, "quantity": qty} for sku, qty in lines],
        "payment": {"token": token},
        "shipping_address": {**ADDRESS, "country": country},
    }


def wait_until(predicate, *, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is true or `timeout` seconds have passed; return its last value.

    Give processes tens of seconds: a loaded 2-core machine runs them many times slower than an idle one, and
    a generous deadline costs nothing when the condition comes true early.
    """
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def all_at_once(calls: list, *, timeout: float = 60) -> list:  # type: ignore[type-arg]
    """Run every callable in its own thread, released together by a barrier; return their results in order.

    A call that raised has its exception in its place, so the test can show it; one still running after
    `timeout` has None. Each thread closes its database connections at the end: they are its own, and
    PostgreSQL counts them.
    """
    import threading

    from django.db import connections

    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return results
