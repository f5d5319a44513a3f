"""A simulated card gateway, the same for every mode: authorize, then capture or void; refund a capture.

Tokens force an outcome so a client or a load test can ask for each failure path (DESIGN.md section 9):
`tok_ok` pays, `tok_decline` is declined, `tok_timeout` times out (transient), `tok_flaky` times out
twice for a given key and then pays. Settings add random declines, faults and latency on top.

Like a real gateway it keeps its own state, in Redis, so retries from any process see the same history:
an authorization is idempotent by the caller's key (a repeat while it is held or captured returns it, so a
retried request never holds or charges twice), and capture, void and refund are idempotent by reference.
Only authorizing talks to the card network (latency, declines, faults); the other calls are bookkeeping.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from redis.commands.core import Script

from shop.errors import GatewayTimeout, PaymentDeclined
from shop.redis import get_redis

TOKENS = ("tok_ok", "tok_decline", "tok_timeout", "tok_flaky")
FLAKY_FAILURES = 2
# Longer than any order takes to place or any saga to finish; a real gateway drops stale holds after days.
MEMORY_SECONDS = 7 * 86_400

AUTHORIZED, CAPTURED, VOIDED, REFUNDED = "authorized", "captured", "voided", "refunded"


@dataclass(frozen=True)
class Authorization:
    reference: str
    amount_cents: int


# The authorization made under the key KEYS[1] while it still holds money, as {reference, amount}.
_HELD = """
local current = redis.call('GET', KEYS[1])
if current then
    local state = redis.call('HGET', 'gateway:auth:' .. current, 'state')
    if state == 'authorized' or state == 'captured' then
        return {current, redis.call('HGET', 'gateway:auth:' .. current, 'amount')}
    end
end
return false
"""

# One call of the gateway's API, idempotent by the caller's key KEYS[1]: the authorization made under it while it
# still holds money, or the card network's answer, then a new authorization if it approves. Atomic, so two
# attempts racing under one key end with one authorization. The card network's side of the simulation (which
# token declines or times out, tok_flaky's attempts under KEYS[2], the random faults drawn by the caller in
# ARGV[5], ARGV[6]) is asked only when nothing is held, as a real gateway answers a repeat from its records.
_AUTHORIZE = _HELD.replace("return false", """
local token = ARGV[4]
if token == 'tok_decline' then return {'declined'} end
if token == 'tok_timeout' then return {'timeout'} end
if token == 'tok_flaky' then
    local attempts = redis.call('INCR', KEYS[2])
    redis.call('EXPIRE', KEYS[2], 86400)
    if attempts <= tonumber(ARGV[7]) then return {'timeout'} end
elseif token ~= 'tok_ok' then
    return {'unknown'}
end
if ARGV[5] == '1' then return {'timeout'} end
if ARGV[6] == '1' then return {'declined_at_random'} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('HSET', 'gateway:auth:' .. ARGV[1], 'state', 'authorized', 'amount', ARGV[2])
redis.call('EXPIRE', 'gateway:auth:' .. ARGV[1], ARGV[3])
return {ARGV[1], ARGV[2]}""").replace("return {current, redis.call", "return {current, redis.call")

# Moves the authorization KEYS[1] to ARGV[2] if it is in one of the states ARGV[1] (comma-separated);
# returns the state it is in afterwards.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
for allowed in string.gmatch(ARGV[1], '[^,]+') do
    if state == allowed then
        redis.call('HSET', KEYS[1], 'state', ARGV[2])
        return ARGV[2]
    end
end
return state
"""


@cache
def _script(source: str) -> Script:
    # EVALSHA after the first call: the script text is not sent again with every payment.
    return get_redis().register_script(source)


def _time_out() -> None:
    time.sleep(settings.PAYMENT_TIMEOUT_MS / 1000)
    raise GatewayTimeout("The payment gateway did not answer in time.")


_REFUSALS = {
    b"declined": "The card was declined.",
    b"unknown": "Unknown payment token.",
    b"declined_at_random": "The card was declined (random decline).",
}


def authorize(*, token: str, amount_cents: int, key: str) -> Authorization:
    """Hold `amount_cents` on the card; nothing is charged until `capture`.

    Idempotent by `key`: while the authorization made under it is held or captured, a repeat returns it
    without asking the card network again. After a void the key authorizes afresh (the void charged nothing).
    Raises PaymentDeclined or GatewayTimeout, and then holds nothing. One round trip to the gateway's memory,
    or two with PAYMENT_LATENCY_MS (the network's latency is paid only by a call that asks it).
    """
    name = f"gateway:key:{key}"
    if settings.PAYMENT_LATENCY_MS:
        held = _script(_HELD)(keys=[name])
        if held:
            return Authorization(reference=held[0].decode(), amount_cents=int(held[1]))
        time.sleep(settings.PAYMENT_LATENCY_MS / 1000)
    fault = bool(settings.PAYMENT_FAULT_RATE) and random.random() < settings.PAYMENT_FAULT_RATE
    decline = bool(settings.PAYMENT_DECLINE_RATE) and random.random() < settings.PAYMENT_DECLINE_RATE
    answer = _script(_AUTHORIZE)(keys=[name, f"gateway:attempts:{key}"], args=[
        f"auth_{uuid.uuid4().hex[:24]}", amount_cents, MEMORY_SECONDS, token, int(fault), int(decline),
        FLAKY_FAILURES,
    ])
    if len(answer) == 2:
        reference, amount = answer
        return Authorization(reference=reference.decode(), amount_cents=int(amount))
    if answer[0] == b"timeout":
        _time_out()
    raise PaymentDeclined(_REFUSALS[answer[0]])


def state(reference: str) -> str | None:
    value = get_redis().hget(f"gateway:auth:{reference}", "state")
    return value.decode() if value is not None else None


def capture(reference: str) -> bool:
    """Charge what `reference` holds. Idempotent; False if it cannot be captured (voided, or unknown)."""
    return _transition(reference, (AUTHORIZED,), CAPTURED) == CAPTURED


def void(reference: str) -> bool:
    """Release the hold of `reference` without charging. Idempotent; False if it was already captured."""
    return _transition(reference, (AUTHORIZED,), VOIDED) == VOIDED


def refund(reference: str) -> bool:
    """Give back a captured charge (an authorization never captured is voided instead). Idempotent."""
    return _transition(reference, (CAPTURED, AUTHORIZED, VOIDED), REFUNDED) == REFUNDED


def _transition(reference: str, allowed: tuple[str, ...], to: str) -> str | None:
    result = _script(_TRANSITION)(keys=[f"gateway:auth:{reference}"], args=[",".join(allowed), to])
    return result.decode() if result is not None else None
