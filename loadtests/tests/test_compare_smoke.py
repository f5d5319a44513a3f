"""The real driver, end to end, with a tiny load: databases, processes, Locust, drain, audit, report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.compare import REPO_ROOT

TINY = ["--users", "4", "--spawn-rate", "4", "--duration", "8s", "--products", "5", "--customers", "4"]


def _compare(out: Path, *args: str) -> tuple[str, dict[str, list[str]]]:
    completed = subprocess.run([sys.executable, "-m", "loadtests.compare", *TINY, "--out", str(out), *args],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in report.splitlines() if line.startswith("| ")}
    return completed.stdout, rows


def test_compare_atomic_end_to_end(tmp_path: Path) -> None:
    stdout, rows = _compare(tmp_path, "--modes", "atomic")
    assert "atomic: load done" in stdout
    assert rows["audit"] == ["OK"]
    assert float(rows["orders placed/s (POST /orders answered)"][0]) > 0
    assert int(rows["confirmed (clients saw)"][0]) > 0
    assert rows["compensated sagas"] == ["n/a"]
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    for kept in ("locust.html", "locust_stats.csv", "locust_stats_history.csv", "samples.csv", "logs/web.log"):
        assert (tmp_path / "atomic" / kept).exists(), kept


@pytest.mark.saga
def test_compare_saga_end_to_end(tmp_path: Path) -> None:
    # The suite's database-per-service pass drives that layout too.
    layout = ["--db-per-service"] if os.environ.get("SHOP_DB_PER_SERVICE") == "1" else []
    _, rows = _compare(tmp_path, "--modes", "saga", "--mix", "tok_decline=0.3", *layout)
    assert rows["audit"] == ["OK"]
    assert rows["still pending when polling gave up"] == ["0"]
    confirmed, failed, pending = (int(n) for n in rows["orders in DB after drain: confirmed / failed / pending"][0]
                                  .split(" / "))
    assert confirmed > 0 and pending == 0
    assert int(rows["compensated sagas"][0]) == failed > 0
    assert rows["outbox lag, worst during load (s)"] != ["n/a"]
    assert (tmp_path / "saga" / "outbox.jsonl").stat().st_size > 0
    if layout:
        assert "a database per service" in (tmp_path / "report.md").read_text()


@pytest.mark.twopc
def test_compare_2pc_end_to_end_on_a_hot_sku(tmp_path: Path) -> None:
    _, rows = _compare(tmp_path, "--modes", "2pc", "--hot-sku-share", "0.5")
    assert rows["audit"] == ["OK"]
    assert int(rows["confirmed (clients saw)"][0]) > 0
    assert "a database per service" in (tmp_path / "report.md").read_text()
