"""The web process as `make run` starts it (gunicorn, runtime.gunicorn_config): what gunicorn answers itself is
problem+json too, and it leaves no control socket in a per-user global path."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from runtime import REPO_ROOT
from runtime.launcher import process_commands
from shop.tests.outages import free_port


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> object:
    port = free_port()
    home = tmp_path_factory.mktemp("home")
    # A HOME and XDG_RUNTIME_DIR of its own: gunicorn's default control socket would land in one of them.
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "WEB_CONCURRENCY": "1"}
    process = subprocess.Popen(process_commands("127.0.0.1", port, flow="atomic")["web"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    yield port, home
    process.terminate()
    process.wait(20)


def _request(port: int, headers: dict[str, str], path: str = "/api/v1/products") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers=headers)
    return connection.getresponse()


def test_an_oversize_header_is_a_problem_json_431(web):
    port, _ = web
    response = _request(port, {"Authorization": "Token " + "x" * 10_000})
    assert response.status == 431
    assert response.getheader("Content-Type") == "application/problem+json"
    import json

    body = json.loads(response.read())
    assert body["status"] == 431 and body["code"] == "request_header_too_large" and "8190" in body["detail"]


def test_a_malformed_request_line_is_a_problem_json_400(web):
    port, _ = web
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /\x01bad HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"Content-Type: application/problem+json" in head and b'"status": 400' in body


def test_the_shop_answers_normally_and_no_control_socket_is_left_in_home(web):
    port, home = web
    # (The schema: this server runs on the database of DATABASE_URL, which the tests do not migrate.)
    assert _request(port, {}, "/api/schema/").status == 200
    assert not list(Path(home).rglob("gunicorn.ctl"))
