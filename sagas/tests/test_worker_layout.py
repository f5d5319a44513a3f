"""The saga worker layouts `make run` and `make compare` start (sagas.processes)."""

from __future__ import annotations

import pytest

from sagas.processes import QUEUES, saga_process_commands


def _workers(commands: dict[str, list[str]]) -> dict[str, tuple[list[str], int]]:
    """Worker name -> (its queues, its pool size)."""
    return {name: (argv[argv.index("-Q") + 1].split(","), int(argv[argv.index("--concurrency") + 1]))
            for name, argv in commands.items() if name.startswith("worker")}


def test_replies_have_a_worker_of_their_own_by_default() -> None:
    commands = saga_process_commands("python")
    workers = _workers(commands)
    assert workers == {"worker-replies": (["sagas"], 2),
                       "worker-commands": (["orders", "payments", "inventory", "shipping"], 2)}, workers
    assert {"relay-default", "sweeper"} <= set(commands), list(commands)


def test_shared_layout_is_one_worker_on_every_queue() -> None:
    workers = _workers(saga_process_commands("python", layout="shared"))
    assert workers == {"worker": (list(QUEUES), 4)}, workers


def test_per_service_workers_still_win_over_the_layout() -> None:
    workers = _workers(saga_process_commands("python", per_service_workers=True))
    assert sorted(workers) == sorted(f"worker-{queue}" for queue in QUEUES), workers


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown saga worker layout 'priority'"):
        saga_process_commands("python", layout="priority")


def test_deploy_procfile_starts_what_the_launcher_starts() -> None:
    """deploy/Procfile is the process list written out (`python -m sagas.processes > deploy/Procfile`)."""
    from pathlib import Path

    from sagas.processes import procfile

    assert (Path(__file__).resolve().parents[2] / "deploy" / "Procfile").read_text() == procfile()


def test_the_launcher_runs_the_same_list_and_flower_on_request(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from runtime.launcher import PYTHON, process_commands

    monkeypatch.delenv("ORDERS_DATABASE_URL", raising=False)
    commands = process_commands("127.0.0.1", 8000, flow="saga", flower=True)
    assert list(commands) == ["web", "worker-replies", "worker-commands", "relay-default", "sweeper", "flower"]
    assert commands["flower"] == [PYTHON, "-m", "celery", "-A", "shop", "flower", "--address=127.0.0.1",
                                  "--port=5555"]
    assert "python:runtime.gunicorn_config" in commands["web"]
    assert all("--task-events" in commands[name] and "--without-heartbeat" not in commands[name]
               for name in ("worker-replies", "worker-commands"))
    assert list(process_commands("127.0.0.1", 8000, flow="atomic")) == ["web"]


@pytest.mark.saga
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_flower_serves_and_sees_the_workers(no_processes) -> None:  # type: ignore[no-untyped-def]
    import json
    import sys
    import urllib.request

    from sagas.processes import flower_command, monitored, worker_command
    from sagas.tests.test_processes import free_port
    from shop.testing import wait_until

    port = free_port()
    no_processes.start("worker-flower", monitored(worker_command(sys.executable, ("sagas",), "flowertest", 1)))
    no_processes.start("flower", flower_command(sys.executable, port=port))

    def workers() -> list[str]:
        # The dashboard's own data (Flower's /api needs credentials, or FLOWER_UNAUTHENTICATED_API).
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers?json=1&refresh=1", timeout=10) as response:
                return [worker.get("hostname", "") for worker in json.loads(response.read())["data"]]
        except OSError:
            return []

    try:
        assert wait_until(lambda: any(name.startswith("flowertest@") for name in workers()), timeout=90,
                          interval=1), no_processes.logs()
    finally:
        no_processes.stop("flower")
        no_processes.stop("worker-flower")
