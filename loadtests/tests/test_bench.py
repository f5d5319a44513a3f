"""`make bench`: its CPU accounting and verdicts on hand-made numbers, then the real driver with tiny loads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.bench import REPO_ROOT, BenchResult, Load, ModeRun, cost_table, tree_ticks

# Every row `make bench` prints, in order; a mode shows a number (or "—" where the row is not its own).
ROWS = (
    "throughput ÷ bare req/s (headline)",
    "saga completed during load ÷ bare req/s",
    "req/s (bare) or orders placed/s (machine-dependent)",
    "saga orders completed during load/s (machine-dependent)",
    "saga orders PENDING when the load stopped",
    "saga drain after the load (s)",
    "orders failed (all tok_ok: should be 0)",
    "answers 503 (refused: overloaded) / other >= 400 / socket errors",
    "load p50 / p99 latency (ms)",
    "CPU ms per order, all processes (machine-dependent)",
    "  web (gunicorn)",
    "  Celery workers",
    "  outbox relay(s)",
    "  sweeper",
    "  PostgreSQL",
    "  Redis",
    "SQL statements per order",
    "transactions per order (server: pg_stat_database)",
    "broker messages per order (Redis LPUSH + RPUSH)",
    "load generator CPU (% of one core)",
    "machine CPU busy during the load (% of all cores)",
)
NUMBER = re.compile(r"^-?\d+(\.\d+)?%?( / -?\d+(\.\d+)?)*( \(not drained\))?$")


def test_reaped_children_move_into_their_parents_cutime() -> None:
    # pid -> (ppid, ticks incl. reaped children). 10 is the root; 11 and 12 its children; 13 a grandchild;
    # 99 is somebody else's.
    before = {10: (1, 100), 11: (10, 50), 12: (10, 30), 13: (11, 5), 99: (1, 1000)}
    assert tree_ticks(10, before) == 185
    # 12 exits and is reaped by 10 (its 30 ticks, plus 2 more it used, land in 10's cutime); 11 works on;
    # a new child 14 appears.
    after = {10: (1, 100 + 32), 11: (10, 60), 13: (11, 5), 14: (10, 7), 99: (1, 5000)}
    assert tree_ticks(10, after) - tree_ticks(10, before) == 2 + 10 + 7
    assert tree_ticks(12, after) == 0


def _run(mode: str, units: int, *, completed: int | None = None, cpu: dict[str, float] | None = None) -> ModeRun:
    counts = {"bare_rows": units if mode == "bare" else 0, "placed": 0 if mode == "bare" else units,
              "final_by_end": units if completed is None else completed, "pending_at_end": 0, "failed_now": 0}
    return ModeRun(mode=mode, processes=["web"], load=Load("wrk", units, 3, 2, 0, 10.0, 0.5, 5.0, 9.0),
                   counts=counts, window_seconds=10.0, drain_seconds=0.0, drained=True,
                   cpu=cpu or {"web (gunicorn)": units * 0.002, "PostgreSQL": units * 0.001},
                   machine_busy_share=0.9, statements=units * 3, server_statements=None, transactions=units,
                   pushes=0)


def _result(*runs: ModeRun) -> BenchResult:
    return BenchResult(runs=list(runs), settings={"tool": "wrk", "connections": 4, "duration": 10.0, "warmup": 1.0,
                                                  "web_workers": 4}, statements_source="django", started_at="now")


def test_verdicts_hold_and_fall_short_on_their_floors() -> None:
    holding = _result(_run("bare", 1000), _run("atomic", 300), _run("saga", 200, completed=120))
    assert [holds for _, holds, _ in holding.verdicts()] == [True, True]
    assert holding.ok
    short = _result(_run("bare", 1000), _run("atomic", 290), _run("saga", 200, completed=100))
    lines = [line for _, _, line in short.verdicts()]
    assert lines[0].startswith("atomic/bare >= 0.3: falls short: 0.29"), lines
    assert lines[1].startswith("saga completed during load / atomic >= 0.4: falls short: 0.34"), lines
    assert not short.ok
    partial = _result(_run("bare", 1000), _run("atomic", 500))
    assert [holds for _, holds, _ in partial.verdicts()] == [True, None]
    assert partial.ok


def test_cost_table_divides_by_what_each_mode_placed() -> None:
    table = cost_table(_result(_run("bare", 1000), _run("atomic", 250),
                               _run("saga", 200, completed=50, cpu={"Celery workers": 10.0})))
    rows = {row[0]: row[1:] for row in table.rows}
    assert table.header == ["", "bare", "atomic", "saga"]
    assert rows["throughput ÷ bare req/s (headline)"] == ["1.00", "0.25", "0.20"]
    assert rows["saga completed during load ÷ bare req/s"] == ["—", "—", "0.05"]
    assert rows["CPU ms per order, all processes (machine-dependent)"] == ["3.0", "3.0", "50.0"]
    assert rows["  Celery workers"] == ["—", "—", "50.0"]
    assert rows["answers 503 (refused: overloaded) / other >= 400 / socket errors"][0] == "2 / 1 / 0"
    assert rows["load generator CPU (% of one core)"] == ["5%", "5%", "5%"]


def _bench(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, list[str]]]:
    out = tmp_path / "bench.md"
    redis_db = ["--redis-db", os.environ["BENCH_REDIS_DB"]] if os.environ.get("BENCH_REDIS_DB") else []
    completed = subprocess.run([sys.executable, "-m", "loadtests.bench", "--duration", "2", "--warmup", "0.5",
                                "--connections", "2", "--customers", "2", "--products", "3", "--out", str(out),
                                *redis_db, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    # 1 is a verdict falling short, which tiny loads on a busy machine may well do; 2 is a crash.
    assert completed.returncode in (0, 1), completed.stdout[-3000:] + completed.stderr[-3000:]
    # "| label |": the label keeps its own indentation (the CPU breakdown rows).
    rows = {line.split("|")[1][1:].rstrip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.read_text().splitlines() if line.startswith("| ")}
    return completed, rows


def _assert_numbers(rows: dict[str, list[str]], label: str, cells: list[str]) -> None:
    assert all(NUMBER.match(cell) for cell in cells), f"{label!r}: {cells}"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (the Python client is tested below)")
def test_bench_every_mode_end_to_end(tmp_path: Path) -> None:
    completed, rows = _bench(tmp_path, "--modes", "bare,atomic,saga")
    labels = [label.strip() for label in rows][1:]
    for wanted in ROWS:
        found = next((label for label in rows if label.strip().startswith(wanted.strip())), None)
        assert found is not None, f"row {wanted!r} missing from {labels}"
        cells = rows[found]
        assert len(cells) == 3, (found, cells)
        if wanted.startswith("saga") or wanted.strip() in ("Celery workers", "outbox relay(s)", "sweeper"):
            assert cells[:2] == ["—", "—"], (found, cells)
            _assert_numbers(rows, found, cells[2:])
        elif wanted.startswith("orders failed"):
            assert cells[0] == "—" and cells[1:] == ["0", "0"], (found, cells)
        else:
            _assert_numbers(rows, found, cells)
    assert rows["throughput ÷ bare req/s (headline)"][0] == "1.00"
    assert float(rows["req/s (bare) or orders placed/s (machine-dependent)"][0]) > 0
    statements = next(cells for label, cells in rows.items() if label.startswith("SQL statements per order"))
    # The bare endpoint's one INSERT, counted in its gunicorn worker: the counting itself is checked here.
    assert statements[0] == "1.0", statements
    assert float(rows["broker messages per order (Redis LPUSH + RPUSH)"][2]) > 0
    assert "atomic/bare >= 0.3: " in completed.stdout
    assert "saga completed during load / atomic >= 0.4: " in completed.stdout
    assert (completed.returncode == 1) == ("falls short" in completed.stdout), completed.stdout[-2000:]


def test_bench_python_client_when_wrk_is_absent(tmp_path: Path) -> None:
    completed, rows = _bench(tmp_path, "--modes", "bare", "--tool", "python")
    assert "load generator python" in completed.stdout
    cells = rows["req/s (bare) or orders placed/s (machine-dependent)"]
    assert float(cells[0]) > 0, cells
    assert rows["answers 503 (refused: overloaded) / other >= 400 / socket errors"] == ["0 / 0 / 0"]
    assert "not measured" in completed.stdout


def test_comparison_report_carries_the_cost_table(tmp_path: Path) -> None:
    from loadtests.report import Report, write_report

    cost = cost_table(_result(_run("bare", 1000), _run("atomic", 250)))
    report = Report(title="t", started_at="now", machine={}, settings={}, versions={}, modes=[], cost=cost)
    markdown, page = write_report(report, tmp_path)
    text = markdown.read_text()
    assert "## What an order costs" in text
    assert "| throughput ÷ bare req/s (headline) | 1.00 | 0.25 |" in text, text
    assert "atomic/bare >= 0.3: falls short: 0.25" in text
    assert "<td>throughput ÷ bare req/s (headline)</td><td>1.00</td><td>0.25</td>" in page.read_text()
