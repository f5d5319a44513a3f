"""The long-running processes of ORDER_FLOW=saga, as the launcher and the load driver start them."""

from __future__ import annotations

from django.conf import settings

from shop.env import SERVICES

QUEUES = (*SERVICES, "sagas")


def relay_aliases() -> list[str]:
    """One relay per distinct database that has an outbox."""
    return ["default", *[alias for alias in SERVICES if alias in settings.DATABASES]]


def worker_command(python: str, queues: tuple[str, ...], name: str, concurrency: int) -> list[str]:
    return [python, "-m", "celery", "-A", "shop", "worker", "-Q", ",".join(queues), "-n", f"{name}@%h",
            "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def relay_command(python: str, alias: str = "default") -> list[str]:
    return [python, "manage.py", "outbox_relay", "--database", alias]


def sweeper_command(python: str) -> list[str]:
    return [python, "manage.py", "saga_sweeper"]


def saga_process_commands(python: str, *, per_service_workers: bool = False,
                          concurrency: int = 4) -> dict[str, list[str]]:
    commands: dict[str, list[str]] = {}
    if per_service_workers:
        for queue in QUEUES:
            commands[f"worker-{queue}"] = worker_command(python, (queue,), queue, max(1, concurrency // 2))
    else:
        commands["worker"] = worker_command(python, QUEUES, "all", concurrency)
    for alias in relay_aliases():
        commands[f"relay-{alias}"] = relay_command(python, alias)
    commands["sweeper"] = sweeper_command(python)
    return commands
