"""The one module that reads the process environment.

Every setting that can change between machines or runs is read here, converted to its type and
checked, so a typo in a variable fails at start-up instead of silently running something else.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from django.core.exceptions import ImproperlyConfigured

ORDER_FLOWS = ("atomic", "saga", "2pc", "choreography")
SERVICES = ("orders", "payments", "inventory", "shipping")
PROFILES = ("development", "production")


def get_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def get_required(name: str, *, why: str) -> str:
    """A variable the production profile cannot start without; the error is one line that names it."""
    value = get_str(name)
    if not value:
        raise ImproperlyConfigured(f"{name} must be set when SHOP_ENV=production ({why})")
    return value


def get_list(name: str, default: str = "") -> list[str]:
    """A comma-separated list; blanks around the items and empty items do not count."""
    return [item.strip() for item in get_str(name, default).split(",") if item.strip()]


def get_header_pair(name: str, default: str) -> tuple[str, str] | None:
    """`Header-Name=value` as Django's (META key, value) pair, e.g. ("HTTP_X_FORWARDED_PROTO", "https")."""
    raw = get_str(name, default)
    if not raw:
        return None
    header, sep, value = raw.partition("=")
    if not sep or not header.strip() or not value.strip():
        raise ImproperlyConfigured(f"{name}={raw!r} is not Header-Name=value (e.g. X-Forwarded-Proto=https)")
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


def machine_host_names() -> list[str]:
    """localhost and this machine's own names and addresses: what a request to it can carry as its Host."""
    names = {"localhost", "127.0.0.1", "[::1]", "testserver"}
    hostname = socket.gethostname()
    names.add(hostname)
    try:
        for *_, address in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
            names.add(address[0] if ":" not in address[0] else f"[{address[0]}]")
    except OSError:
        pass  # a name that does not resolve: its addresses are simply not added
    # The address of the interface that reaches other machines (a UDP "connect" sends nothing).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            names.add(probe.getsockname()[0])
        except OSError:
            pass  # no route out: only loopback is reachable anyway
    return sorted(name for name in names if name)


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


def get_networks(name: str, default: str = "") -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated list of addresses or networks (`10.0.0.5`, `10.0.0.0/24`, `::1`)."""
    networks = []
    for item in get_str(name, default).split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ImproperlyConfigured(f"{name}: {item.strip()!r} is not an address or network") from exc
    return networks


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
