"""SHOP_ENV=production: refuses to start without its secrets, passes `check --deploy`; development is flagged."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_KEY = secrets.token_urlsafe(50)


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {name: value for name, value in os.environ.items()
               if name not in ("SHOP_ENV", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env={**environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("missing", "env"), [
    ("SECRET_KEY", {"ALLOWED_HOSTS": "shop.example.com"}),
    ("ALLOWED_HOSTS", {"SECRET_KEY": REAL_KEY}),
])
def test_production_without_a_required_variable_fails_in_one_line_naming_it(missing, env):
    result = _manage("check", SHOP_ENV="production", **env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert missing in lines[0] and "SHOP_ENV=production" in lines[0]


def test_production_refuses_debug():
    result = _manage("check", SHOP_ENV="production", SECRET_KEY=REAL_KEY, ALLOWED_HOSTS="shop.example.com",
                     DEBUG="1")
    assert result.returncode != 0 and "DEBUG" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_production_passes_check_deploy_at_warning_level():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", SHOP_ENV="production", SECRET_KEY=REAL_KEY,
                     ALLOWED_HOSTS="shop.example.com")
    assert result.returncode == 0, result.stdout + result.stderr


def test_development_check_deploy_flags_the_built_in_key():
    result = _manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


def test_production_settings_and_json_logs():
    code = ("import json, logging; from django.conf import settings as s; "
            "from shop.logs import log_context; "
            "print(json.dumps([s.DEBUG, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
            "s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER, len(s.AUTH_PASSWORD_VALIDATORS), s.DEMO_ADMIN]));"
            "ctx = log_context(request_id='r1', order_id=7, saga_id='s9'); ctx.__enter__(); "
            "logging.getLogger('shop.test').warning('hello')")
    result = _manage("shell", "-c", code, SHOP_ENV="production", SECRET_KEY=REAL_KEY,
                     ALLOWED_HOSTS="shop.example.com", SECURE_HSTS_SECONDS="60")
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        False, True, 60, True, True, ["HTTP_X_FORWARDED_PROTO", "https"], 4, False]
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello" and line["level"] == "WARNING"
    assert (line["request_id"], line["order_id"], line["saga_id"]) == ("r1", "7", "s9")


def test_development_hosts_include_the_machine_address():
    from django.conf import settings

    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    if not addresses:
        pytest.skip("`hostname -I` lists no address on this machine")
    ipv4 = [address for address in addresses if ":" not in address]
    assert ipv4 and ipv4[0] in settings.ALLOWED_HOSTS, (addresses, settings.ALLOWED_HOSTS)
    assert "localhost" in settings.ALLOWED_HOSTS
