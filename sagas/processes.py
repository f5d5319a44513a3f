"""The shop's long-running processes, as `make run`, the load drivers and deploy/Procfile start them.

`process_commands` is the one list: the web server, and in saga mode the Celery workers, one outbox relay per
database and the sweeper, plus Flower when asked for. deploy/Procfile writes the same commands out for a
process manager (a test keeps the two in step).
"""

from __future__ import annotations

import os

from django.conf import settings

from shop.env import SERVICES

QUEUES = (*SERVICES, "sagas")


def relay_aliases(service_urls: dict[str, str] | None = None) -> list[str]:
    """One relay per distinct database that has an outbox (from the settings, or from the service database
    URLs a driver is about to start the processes with)."""
    if service_urls is not None:
        return ["default", *[service for service in SERVICES if service in service_urls]]
    return ["default", *[alias for alias in SERVICES if alias in settings.DATABASES]]


def web_command(python: str, host: str, port: int | str, workers: int | str) -> list[str]:
    # runtime.gunicorn_config: gunicorn's own answers as problem+json, no control socket, and the multiprocess
    # folder through which /metrics adds up every worker's request figures.
    return [python, "-m", "gunicorn", "shop.wsgi:application", "-c", "python:runtime.gunicorn_config", "--bind",
            f"{host}:{port}", "--workers", str(workers)]


FLOWER_PORT = 5555


def flower_command(python: str, host: str = "127.0.0.1", port: int = FLOWER_PORT) -> list[str]:
    return [python, "-m", "celery", "-A", "shop", "flower", f"--address={host}", f"--port={port}"]


def worker_command(python: str, queues: tuple[str, ...], name: str, concurrency: int) -> list[str]:
    return [python, "-m", "celery", "-A", "shop", "worker", "-Q", ",".join(queues), "-n", f"{name}@%h",
            "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def relay_command(python: str, alias: str = "default") -> list[str]:
    return [python, "manage.py", "outbox_relay", "--database", alias]


def sweeper_command(python: str) -> list[str]:
    return [python, "manage.py", "saga_sweeper"]


# Worker layouts on one machine (`python -m loadtests.bench --saga-layout` measures them):
# - "shared": one worker consumes every queue. Celery's Redis transport takes the queues round-robin, so a
#   reply (queue `sagas`) waits behind new commands, and under load sagas pile up half done.
# - "replies" (the default): the orchestrator's queue gets a worker of its own and the four service queues
#   share another, with the same number of processes in all. Replies never queue behind commands, so a saga
#   that has started finishes before new ones take the participants' time. Measured with the bench on
#   2 busy cores (16 clients, 20 s, three runs of each, interleaved): sagas completed during the load
#   6.5-10.6/s against 1.6-2.9/s shared, accepted 14-20/s against 12-13/s, CPU per saga 93-113 ms
#   against 112-127 ms.
# Queue priorities instead (one worker, Celery's Redis `queue_order_strategy: priority`, replies first, the
# service queues in the flow's order or reversed) did worse: 0-2.5 completed/s against 5.8-7.7/s in runs
# alternated with the reply worker's.
LAYOUTS = ("shared", "replies")
DEFAULT_LAYOUT = "replies"
REPLY_QUEUES = ("sagas",)
COMMAND_QUEUES = tuple(queue for queue in QUEUES if queue not in REPLY_QUEUES)


def process_commands(python: str, host: str, port: int | str, *, flow: str, per_service_workers: bool = False,
                     flower: bool = False, service_urls: dict[str, str] | None = None,
                     workers: int | str | None = None) -> dict[str, list[str]]:
    """Every long-running process of order flow `flow`, by name.

    The flow is an argument rather than read from settings so a driver (loadtests.compare) can build the
    commands for each mode in turn without setting Django up in its own process."""
    commands = {"web": web_command(python, host, port, workers if workers is not None else
                                   int(os.environ.get("WEB_CONCURRENCY", "4")))}
    if flow == "saga":
        commands.update(saga_process_commands(python, per_service_workers=per_service_workers,
                                              service_urls=service_urls))
    elif flow == "2pc":
        # Resolves the prepared branches a coordinator left behind (twopc/recovery.py).
        commands["recovery"] = [python, "manage.py", "recover_2pc"]
    elif flow == "choreography":
        commands.update(choreography_process_commands(python, per_service_workers=per_service_workers,
                                                      service_urls=service_urls))
    if flower:
        for name, argv in commands.items():
            if name.startswith("worker"):
                commands[name] = monitored(argv)
        commands["flower"] = flower_command(python)
    return commands


def monitored(worker: list[str]) -> list[str]:
    """A worker command that Flower can watch: heartbeats (Flower lists the workers it hears from) and task
    events. Only with Flower: each costs broker messages (a heartbeat every 2 s, an event per task state)."""
    return [arg for arg in worker if arg != "--without-heartbeat"] + ["--task-events"]


def saga_process_commands(python: str, *, per_service_workers: bool = False, concurrency: int = 4,
                          layout: str = DEFAULT_LAYOUT,
                          service_urls: dict[str, str] | None = None) -> dict[str, list[str]]:
    """The saga processes by name: Celery workers (`layout`, or one per queue with `per_service_workers`),
    one outbox relay per database, the sweeper."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown saga worker layout {layout!r} (one of {', '.join(LAYOUTS)})")
    commands: dict[str, list[str]] = {}
    if per_service_workers:
        commands.update(_worker_per_queue(python, QUEUES, concurrency))
    elif layout == "replies":
        half = max(1, concurrency // 2)
        commands["worker-replies"] = worker_command(python, REPLY_QUEUES, "orchestrator", half)
        commands["worker-commands"] = worker_command(python, COMMAND_QUEUES, "services", max(1, concurrency - half))
    else:
        commands["worker"] = worker_command(python, QUEUES, "all", concurrency)
    commands.update(_relays(python, service_urls))
    commands["sweeper"] = sweeper_command(python)
    return commands


def _worker_per_queue(python: str, queues: tuple[str, ...], concurrency: int) -> dict[str, list[str]]:
    return {f"worker-{queue}": worker_command(python, (queue,), queue, max(1, concurrency // 2)) for queue in queues}


def _relays(python: str, service_urls: dict[str, str] | None) -> dict[str, list[str]]:
    return {f"relay-{alias}": relay_command(python, alias) for alias in relay_aliases(service_urls)}


def choreography_sweeper_command(python: str) -> list[str]:
    return [python, "manage.py", "choreography_sweeper"]


def choreography_process_commands(python: str, *, per_service_workers: bool = False, concurrency: int = 4,
                                  service_urls: dict[str, str] | None = None) -> dict[str, list[str]]:
    """The processes of ORDER_FLOW=choreography: the same workers on the services' queues (no orchestrator,
    so nothing consumes `sagas`: one worker takes the service queues with every process, or one per queue),
    one outbox relay per database, and the choreography sweeper in place of the saga one."""
    commands: dict[str, list[str]] = {}
    if per_service_workers:
        commands.update(_worker_per_queue(python, COMMAND_QUEUES, concurrency))
    else:
        commands["worker-commands"] = worker_command(python, COMMAND_QUEUES, "services", concurrency)
    commands.update(_relays(python, service_urls))
    commands["sweeper"] = choreography_sweeper_command(python)
    return commands


def procfile() -> str:
    """deploy/Procfile: the saga mode's processes on one database, as a process manager starts them
    (`python -m sagas.processes > deploy/Procfile` writes it again; sagas/tests/test_worker_layout.py checks)."""
    commands = process_commands("python", "0.0.0.0", "$PORT", flow="saga", service_urls={},
                                workers="$WEB_CONCURRENCY")
    return "".join(f"{name}: {' '.join(argv)}\n" for name, argv in commands.items())


if __name__ == "__main__":
    print(procfile(), end="")
