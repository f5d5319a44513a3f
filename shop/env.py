"""The one module that reads the process environment.

Every setting that can change between machines or runs is read here, converted to its type and
checked, so a typo in a variable fails at start-up instead of silently running something else.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

ORDER_FLOWS = ("atomic", "saga", "choreography")
SERVICES = ("orders", "payments", "inventory", "shipping")


def get_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def get_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def get_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from exc
    _check_range(name, value, minimum, maximum)
    return value


def get_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from exc
    _check_range(name, value, minimum, maximum)
    return value


def get_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = get_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}")


def database_url() -> str:
    """DATABASE_URL, or the embedded server's when it is running (so `manage.py` works beside `make run`)."""
    url = get_str("DATABASE_URL")
    if url:
        return url
    from runtime import embedded

    url = embedded.running_database_url()
    if url:
        return url
    raise ImproperlyConfigured(
        "DATABASE_URL is not set and no embedded PostgreSQL is running. "
        "Start the shop with `make run`, or run a command inside the embedded services with "
        "`.venv/bin/python -m runtime.launcher exec -- <command>`."
    )


def redis_url() -> str:
    url = get_str("REDIS_URL")
    if url:
        return url
    from runtime import embedded

    url = embedded.running_redis_url()
    if url:
        return url
    raise ImproperlyConfigured(
        "REDIS_URL is not set and no embedded Redis is running. Start the shop with `make run`, or set REDIS_URL."
    )


def service_database_urls() -> dict[str, str]:
    """The optional per-service databases: ORDERS_DATABASE_URL and its siblings."""
    urls = {}
    for service in SERVICES:
        url = get_str(f"{service.upper()}_DATABASE_URL")
        if url:
            urls[service] = url
    return urls
