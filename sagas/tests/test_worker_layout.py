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
    from shop.launcher import PYTHON, process_commands

    monkeypatch.delenv("ORDERS_DATABASE_URL", raising=False)
    commands = process_commands("127.0.0.1", 8000, flow="saga", flower=True)
    assert list(commands) == ["web", "worker-replies", "worker-commands", "relay-default", "sweeper", "flower"]
    assert commands["flower"] == [PYTHON, "-m", "celery", "-A", "shop", "flower", "--address=127.0.0.1",
                                  "--port=5555"]
    assert "python:monitoring.gunicorn" in commands["web"]
    assert list(process_commands("127.0.0.1", 8000, flow="atomic")) == ["web"]
