"""The shop's processes under the chaos driver's own supervision.

Each process runs in its own session (so a signal reaches a Celery worker's pool children too) with its
output in `<name>.<n>.log`, one file per start, so a worker's log before a kill and after its restart can
be read apart. A background thread plays the supervisor that DESIGN.md section 6 asks for: a process that
exits without being told to is restarted after a second, and the exit is recorded, because a process that
dies when a dependency goes away is itself a finding.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.launcher import REPO_ROOT

RESTART_DELAY_SECONDS = 1.0


@dataclass
class Exit:
    name: str
    returncode: int
    at: float  # time.monotonic()
    last_error: str = ""  # the last CRITICAL / ERROR line of its log


def last_error_line(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "CRITICAL" in line or " ERROR " in line or "Error:" in line:
            return " ".join(line.split())[-160:]
    return ""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path
    starts: int
    expected_exit: bool = False


class Stack:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, Child] = {}
        self.unexpected_exits: list[Exit] = []
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)
        self._thread.start()

    # -- starting and stopping ---------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], **env: str) -> Child:
        with self.lock:
            previous = self.children.get(name)
            if previous is not None and previous.proc.poll() is None:
                raise RuntimeError(f"{name} is already running")
            starts = previous.starts + 1 if previous is not None else 1
            full_env = {**self.env, **env}
            log_path = self.log_dir / f"{name}.{starts}.log"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            child = Child(name, argv, full_env, proc, log_path, starts)
            self.children[name] = child
            return child

    def restart(self, name: str) -> Child:
        """Start `name` again with the command and environment of its last start."""
        with self.lock:
            child = self.children[name]
            self._signal(child, signal.SIGTERM, wait=20)
            return self.start(name, child.argv, **{k: v for k, v in child.env.items() if self.env.get(k) != v})

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group: no shutdown handler, no acknowledgement, nothing flushed."""
        self._signal(self.children[name], signal.SIGKILL, wait=10)

    def stop(self, name: str) -> None:
        self._signal(self.children[name], signal.SIGTERM, wait=20)

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process keeps its connections, its messages and its open transactions, and does
        nothing (a stalled VM, a long GC pause)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.children[name].proc.pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.children[name].proc.pid, signal.SIGCONT)

    def expect_exit(self, name: str) -> None:
        """The next exit of `name` is part of the scenario (an injected crash), not a finding."""
        with self.lock:
            self.children[name].expected_exit = True

    def _signal(self, child: Child, sig: int, *, wait: float) -> None:
        with self.lock:
            child.expected_exit = True
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
                    os.killpg(child.proc.pid, sig)
        try:
            child.proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait(10)
        # Pool children of a Celery worker may outlive their parent for a moment.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, signal.SIGKILL)

    def running(self, name: str) -> bool:
        child = self.children.get(name)
        return child is not None and child.proc.poll() is None

    def close(self) -> None:
        """Stop everything: SIGTERM to all at once, then wait (SIGKILL whatever is still there after 15 s)."""
        self._stop.set()
        self._thread.join(5)
        children = list(self.children.values())
        with self.lock:
            for child in children:
                child.expected_exit = True
                if child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.proc.pid, signal.SIGCONT)
                        os.killpg(child.proc.pid, signal.SIGTERM)
        for child in children:
            self._signal(child, signal.SIGTERM, wait=15)

    # -- supervision -------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            with self.lock:
                dead = [c for c in self.children.values() if c.proc.poll() is not None and not c.expected_exit]
                for child in dead:
                    self.unexpected_exits.append(Exit(child.name, child.proc.returncode, time.monotonic(),
                                                      last_error_line(child.log_path)))
                    child.expected_exit = True  # recorded once; restarted below
            for child in dead:
                if self._stop.wait(RESTART_DELAY_SECONDS):
                    return
                with self.lock:
                    if self.children.get(child.name) is child:
                        self.start(child.name, child.argv,
                                   **{k: v for k, v in child.env.items() if self.env.get(k) != v})

    def exits_summary(self) -> str:
        counts: dict[str, list[Exit]] = {}
        for exit_ in self.unexpected_exits:
            counts.setdefault(exit_.name, []).append(exit_)
        return ", ".join(
            f"{name} exited {len(exits)}x (exit {', '.join(map(str, sorted({e.returncode for e in exits})))})"
            + (f", last log error: {exits[-1].last_error}" if exits[-1].last_error else "")
            for name, exits in sorted(counts.items()))

    def log_text(self, name: str) -> str:
        """Every log of `name`, oldest start first."""
        paths = sorted(self.log_dir.glob(f"{name}.*.log"), key=lambda p: int(p.name.rsplit(".", 2)[1]))
        return "".join(p.read_text(errors="replace") for p in paths)
