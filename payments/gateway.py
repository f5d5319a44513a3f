"""A simulated card gateway, the same for every mode.

Tokens force an outcome so a client or a load test can ask for each failure path (DESIGN.md section 9):
`tok_ok` pays, `tok_decline` is declined, `tok_timeout` times out (transient), `tok_flaky` times out
twice for a given charge key and then pays. Settings add random declines, faults and latency on top.
The per-key attempt count lives in Redis, as it would in a real gateway, so retries from any process
see the same history.
"""

from __future__ import annotations

import random
import time
import uuid

from django.conf import settings

from shop.errors import GatewayTimeout, PaymentDeclined
from shop.redis import get_redis

TOKENS = ("tok_ok", "tok_decline", "tok_timeout", "tok_flaky")
FLAKY_FAILURES = 2


def _attempt(key: str) -> int:
    name = f"gateway:attempts:{key}"
    pipe = get_redis().pipeline()
    pipe.incr(name)
    pipe.expire(name, 86_400)
    return int(pipe.execute()[0])


def _time_out() -> None:
    time.sleep(settings.PAYMENT_TIMEOUT_MS / 1000)
    raise GatewayTimeout("The payment gateway did not answer in time.")


def authorize(*, token: str, amount_cents: int, key: str) -> str:
    """Authorize and capture `amount_cents`; return the gateway's reference.

    Raises PaymentDeclined (business: do not retry) or GatewayTimeout (transient: retry with the same key).
    """
    if settings.PAYMENT_LATENCY_MS:
        time.sleep(settings.PAYMENT_LATENCY_MS / 1000)
    if token == "tok_decline":
        raise PaymentDeclined("The card was declined.")
    if token == "tok_timeout":
        _time_out()
    if token == "tok_flaky" and _attempt(key) <= FLAKY_FAILURES:
        _time_out()
    if token not in TOKENS:
        raise PaymentDeclined("Unknown payment token.")
    if settings.PAYMENT_FAULT_RATE and random.random() < settings.PAYMENT_FAULT_RATE:
        _time_out()
    if settings.PAYMENT_DECLINE_RATE and random.random() < settings.PAYMENT_DECLINE_RATE:
        raise PaymentDeclined("The card was declined (random decline).")
    return f"ch_{uuid.uuid4().hex[:24]}"
