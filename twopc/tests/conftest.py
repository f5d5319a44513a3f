"""ORDER_FLOW=2pc tests: a database per service (the launcher's SHOP_DB_PER_SERVICE=1) and ORDER_FLOW=2pc in
the environment, so every connection carries the flow's lock_timeout; `make test` runs them in a pass of their
own. The crash tests need a coordinator that can die: a gunicorn web server on the test databases."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from shop.testing import wait_until
from twopc.recovery import in_doubt_branches, recover
from twopc.services import decision_log_close

REPO_ROOT = Path(__file__).resolve().parents[2]


def _url(config: dict) -> str:
    from sagas.tests.conftest import _url as url

    return url(config)


@pytest.fixture(autouse=True)
def _no_branch_left_behind(request) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every 2pc test leaves no prepared branch (they hold locks and would outlive the test's databases' reset)."""
    yield
    if request.node.get_closest_marker("twopc") is None:
        return
    left = in_doubt_branches()
    recover(grace_seconds=0)
    decision_log_close()
    connections.close_all()
    assert not left, f"prepared branches left behind: {left}"


class WebServer:
    """gunicorn (one worker) serving the test databases with extra settings; its worker may die (a fault)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.env: dict[str, str] = {}

    def start(self, **env: str) -> str:
        self.stop()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        full_env = {**os.environ, "ORDER_FLOW": "2pc", "DATABASE_URL": _url(settings.DATABASES["default"]),
                    **{f"{alias.upper()}_DATABASE_URL": _url(config) for alias, config in settings.DATABASES.items()
                       if alias != "default"}, **env}
        self.env = full_env
        log = open(self.log_dir / "web.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "shop.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers",
             "1", "--graceful-timeout", "2"], cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{self.base}/api/v1/products", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        assert wait_until(up, timeout=60, interval=0.2), self.logs()
        return self.base

    def post(self, path: str, body: dict, *, token: str, key: str) -> int:
        """POST as a client would; the status, or 0 when the server hung up without answering."""
        request = urllib.request.Request(
            f"{self.base}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Token {token}", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, http.client.HTTPException):
            return 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def logs(self) -> str:
        path = self.log_dir / "web.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def web(tmp_path) -> Iterator[WebServer]:  # type: ignore[no-untyped-def]
    server = WebServer(tmp_path)
    yield server
    server.stop()
