"""The real driver, end to end, for atomic mode with a tiny load: databases, processes, Locust, audit, report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtests.compare import REPO_ROOT


def test_compare_atomic_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report"
    completed = subprocess.run(
        [sys.executable, "-m", "loadtests.compare", "--modes", "atomic", "--users", "4", "--spawn-rate", "4",
         "--duration", "8s", "--products", "5", "--customers", "4", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "atomic: load done" in completed.stdout
    report = (out / "report.md").read_text()
    assert "| audit | OK |" in report
    placed = next(line for line in report.splitlines() if line.startswith("| orders placed/s"))
    assert float(placed.split("|")[2]) > 0
    confirmed = next(line for line in report.splitlines() if line.startswith("| confirmed (clients saw)"))
    assert int(confirmed.split("|")[2]) > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()
    for kept in ("locust.html", "locust_stats.csv", "locust_stats_history.csv", "samples.csv", "logs/web.log"):
        assert (out / "atomic" / kept).exists(), kept
