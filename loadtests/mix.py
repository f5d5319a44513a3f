"""The load mix: what the simulated shoppers ask for, shared by the driver and the Locust scenario.

The driver parses it from its command line and hands it to Locust as LOAD_* environment variables (Locust
runs in its own process); the locustfile reads it back with `LoadMix.from_env()`. Plain Python only: the
locustfile imports this module after gevent has patched the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

# The payment tokens of the API contract (DESIGN.md section 9), in the order reports show them.
TOKENS = ("tok_ok", "tok_decline", "tok_timeout", "tok_flaky")
DEFAULT_TOKEN_SHARES = {"tok_ok": 0.86, "tok_decline": 0.04, "tok_timeout": 0.03, "tok_flaky": 0.07}


@dataclass(frozen=True)
class LoadMix:
    # manage.py seed's defaults, so a bare `locust -f loadtests/locustfile.py` against `make run` logs in.
    customers: int = 5
    password: str = "password"
    products: int = 20
    # Share of orders that ask for SKU-0001, the one product everybody wants (contention, then out of stock).
    hot_sku_share: float = 0.2
    token_shares: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TOKEN_SHARES))
    undeliverable_share: float = 0.03
    # Share of orders sent a second time with the same Idempotency-Key and body, as a retrying client does.
    replay_share: float = 0.05
    # A user's pause between tasks, in seconds (a closed model: each user waits for its answer first).
    think_min: float = 0.05
    think_max: float = 0.25
    # A user polls a 202 order first after poll_interval, then backs off to poll_max_interval, for at most
    # poll_timeout: fine resolution for fast orders without the pollers crowding out the web workers.
    poll_interval: float = 0.05
    poll_max_interval: float = 0.25
    poll_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("hot_sku_share", "undeliverable_share", "replay_share"):
            _check_share(name, getattr(self, name))
        unknown = sorted(set(self.token_shares) - set(TOKENS))
        if unknown:
            raise ValueError(f"unknown payment token(s): {', '.join(unknown)} (known: {', '.join(TOKENS)})")
        for token, share in self.token_shares.items():
            _check_share(token, share)
        if abs(sum(self.token_shares.values()) - 1) > 1e-6:
            raise ValueError(f"payment token shares must add up to 1, not {sum(self.token_shares.values()):g}")
        if self.customers < 1 or self.products < 1:
            raise ValueError("customers and products must be at least 1")
        if not 0 <= self.think_min <= self.think_max:
            raise ValueError("think time must be 0 <= min <= max")
        if not 0 < self.poll_interval <= self.poll_max_interval or self.poll_timeout <= 0:
            raise ValueError("poll intervals and timeout must be positive, the first no longer than the most")

    def to_env(self) -> dict[str, str]:
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token_shares":
                value = format_token_shares(value)
            env[f"LOAD_{f.name.upper()}"] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadMix:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f"LOAD_{f.name.upper()}")
            if raw is None:
                continue
            if f.name == "token_shares":
                values[f.name] = parse_token_shares(raw, fill_ok=False)
            elif f.name == "password":
                values[f.name] = raw
            elif f.name in ("customers", "products"):
                values[f.name] = int(raw)
            else:
                values[f.name] = float(raw)
        return cls(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict:
        return {**asdict(self), "token_shares": dict(self.token_shares)}


def _check_share(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a share between 0 and 1, not {value}")


def format_token_shares(shares: Mapping[str, float]) -> str:
    return ",".join(f"{token}={shares.get(token, 0):g}" for token in TOKENS)


def parse_token_shares(text: str, *, fill_ok: bool = True) -> dict[str, float]:
    """`tok_decline=0.1,tok_timeout=0.05` -> every token's share.

    Tokens not named keep no share, except tok_ok which, unless named, takes whatever is left: so
    `--mix tok_decline=0.2` means 20% declined and 80% paid."""
    shares = dict.fromkeys(TOKENS, 0.0)
    named = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        token, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not token=share")
        token = token.strip()
        if token not in TOKENS:
            raise ValueError(f"unknown payment token {token!r} (known: {', '.join(TOKENS)})")
        shares[token] = float(value)
        named.add(token)
    if fill_ok and "tok_ok" not in named:
        shares["tok_ok"] = round(1 - sum(shares.values()), 9)
    return shares


def parse_mix(text: str) -> tuple[dict[str, float], float | None]:
    """The driver's `--mix`: token shares plus an optional `undeliverable=share`, comma-separated."""
    token_parts, undeliverable = [], None
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key.strip() == "undeliverable":
            undeliverable = float(value)
        else:
            token_parts.append(part)
    if not token_parts:
        return dict(DEFAULT_TOKEN_SHARES), undeliverable
    return parse_token_shares(",".join(token_parts)), undeliverable
