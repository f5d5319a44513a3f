"""The launcher's supervisor, with real processes: a child that dies comes back, nothing else is touched,
and SIGTERM stops everything it started."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.launcher import REPO_ROOT
from shop.backoff import Backoff, FailureLog
from shop.testing import wait_until
from shop.tests.outages import alive, read_text

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
# A child with a child of its own in its process group, as gunicorn and Celery have.
PARENT = ["sh", "-c", "sleep 600 & echo \"grandchild $!\"; wait"]
SUPERVISOR = ("import json, sys\n"
              "from runtime.supervisor import supervise\n"
              "sys.exit(supervise(json.loads(sys.argv[1]), backoff_initial=0.4, backoff_cap=3.0))")


def _pids(log: str, name: str) -> list[int]:
    return [int(pid) for pid in re.findall(rf"\] {name} (?:re)?started \(pid (\d+)", log)]


def _delays(log: str, name: str) -> list[float]:
    return [float(d) for d in re.findall(rf"\] {name} \(pid \d+\) exited with -?\d+ after [\d.]+ s; "
                                         rf"restart #\d+ in ([\d.]+) s", log)]


@pytest.fixture
def supervisor(tmp_path: Path):  # type: ignore[no-untyped-def]
    log_path = tmp_path / "supervisor.log"
    commands = {"web": SLEEPER, "relay": SLEEPER, "worker": PARENT}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", SUPERVISOR, json.dumps(commands)], cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield process, log_path
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_a_dead_child_is_restarted_and_the_others_keep_running(supervisor):
    process, log_path = supervisor
    log = lambda: read_text(log_path)  # noqa: E731
    assert wait_until(lambda: all(_pids(log(), name) for name in ("web", "relay", "worker"))
                      and "grandchild" in log(), timeout=30), log()
    web, relay, worker = (_pids(log(), name)[0] for name in ("web", "relay", "worker"))
    grandchild = int(re.findall(r"grandchild (\d+)", log())[0])

    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: len(_pids(log(), "worker")) == 2, timeout=30), log()
    new_worker = _pids(log(), "worker")[1]
    assert new_worker != worker and alive(new_worker), log()
    assert "worker restarted (pid" in log() and "restart #1)" in log(), log()
    # What the dead child left in its process group went with it, so its replacement has no competitor.
    assert wait_until(lambda: not alive(grandchild), timeout=10), f"grandchild {grandchild} outlived its parent"
    assert alive(web) and alive(relay), log()

    # The web server is a child like the others: restarted too, and the rest untouched.
    os.kill(web, signal.SIGKILL)
    assert wait_until(lambda: len(_pids(log(), "web")) == 2, timeout=30), log()
    assert alive(_pids(log(), "web")[1]) and alive(relay) and alive(new_worker), log()

    # Dying again soon after a restart waits longer: the backoff grows while a child keeps dying.
    os.kill(new_worker, signal.SIGKILL)
    assert wait_until(lambda: len(_pids(log(), "worker")) == 3, timeout=30), log()
    assert "restart #2)" in log(), log()
    first, second = _delays(log(), "worker")
    assert second >= first, f"second restart delay {second} s shorter than the first {first} s:\n{log()}"
    assert process.poll() is None, log()

    children = [_pids(log(), name)[-1] for name in ("web", "relay", "worker")]
    grandchildren = [int(pid) for pid in re.findall(r"grandchild (\d+)", log())]
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0, log()
    still_running = [pid for pid in children + grandchildren if alive(pid)]
    assert not still_running, f"still running after the supervisor stopped: {still_running}\n{log()}"
    assert "stopping web, relay, worker" in log(), log()


def test_a_child_that_ignores_sigterm_is_killed_on_stop(tmp_path: Path):
    log_path = tmp_path / "supervisor.log"
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                      "print('ready', flush=True); time.sleep(600)"]
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", SUPERVISOR, json.dumps({"stubborn": stubborn})],
                                   cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_until(lambda: "ready" in read_text(log_path), timeout=30), read_text(log_path)
        child = _pids(read_text(log_path), "stubborn")[0]
        os.kill(process.pid, signal.SIGINT)  # Ctrl-C
        assert process.wait(40) == 0, read_text(log_path)
        assert not alive(child), read_text(log_path)
        assert "ignored SIGTERM" in read_text(log_path), read_text(log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_backoff_doubles_up_to_its_cap_with_jitter_and_starts_over_after_reset():
    backoff = Backoff(initial=0.5, cap=4.0)
    delays = [backoff.next_delay() for _ in range(8)]
    bounds = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound / 2 <= delay <= bound, f"delays {delays} outside [bound/2, bound] for bounds {bounds}"
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5


def test_failure_log_reports_once_per_period_and_the_recovery(caplog):
    now = [0.0]
    failures = FailureLog(logging.getLogger("test.failures"), "thing", period=60,
                          clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="test.failures"):
        for _ in range(100):  # 100 attempts within 50 s: one line
            failures.failed(ConnectionError("refused"), retry_in=0.5)
            now[0] += 0.5
        assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
        now[0] = 61.0
        failures.failed(ConnectionError("refused"), retry_in=0.5)
        failures.recovered()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "still failing after 61 s and 101 attempts (100 since the last report)" in messages[1], messages
    assert "recovered after 61.0 s and 101 failed attempts" in messages[2], messages


@pytest.mark.parametrize(("env", "named"), [
    ({"ORDER_FLOW": "bogus"}, "ORDER_FLOW"),
    ({"SHOP_ENV": "production", "SECRET_KEY": "", "ALLOWED_HOSTS": "shop.example.com"}, "SECRET_KEY"),
])
def test_run_with_a_bad_setting_says_so_in_one_line_before_starting_anything(tmp_path, env, named):
    # DATABASE_URL / REDIS_URL unset: the launcher would start the embedded servers first, were it to start.
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "-m", "runtime.launcher", "run", "--port", "1"], cwd=REPO_ROOT,
                            env={**environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) == 1 and named in output[0] and "cannot start" in output[0], output
