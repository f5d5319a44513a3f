"""The report's numbers come from its inputs: small hand-made runs in, a table we can check by eye out."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.report import (
    ModeResult,
    Report,
    Sample,
    comparison_table,
    orders_per_second_series,
    percentile,
    read_samples,
    summarize,
    write_report,
)


def _run(mode: str, post_ms: list[float], finals: list[tuple[str, float]], *, sagas: dict | None = None,
         audit_ok: bool = True, outbox: list[dict] | None = None) -> ModeResult:
    # One POST per second over len(post_ms) seconds, so orders/s is (n - 1 seconds of span) exact.
    samples = [Sample(1000.0 + i, "POST", "/api/v1/orders", ms, True) for i, ms in enumerate(post_ms)]
    samples += [Sample(1000.5 + i, "FINAL", f"order {outcome}", ms, outcome != "unresolved")
                for i, (outcome, ms) in enumerate(finals)]
    samples.append(Sample(1001.0, "GET", "/api/v1/products", 3, False))
    confirmed = sum(1 for outcome, _ in finals if outcome == "confirmed")
    return ModeResult(
        mode=mode, samples=samples,
        collected={"drained": True, "drain_seconds": 0.5,
                   "orders": {"by_status": {"PENDING": 0, "CONFIRMED": confirmed, "FAILED": 1},
                              "failed_by_reason": {"out_of_stock": 1}},
                   "sagas": sagas, "outbox": None, "versions": {"postgresql": "18.0"}},
        audit_ok=audit_ok, audit_lines=["I1 money       OK    fine"], outbox_samples=outbox or [],
        failures=[("GET", "/api/v1/products", "unexpected 500", 1)], locust_html=f"{mode}/locust.html",
        layout="web",
    )


@pytest.fixture
def report() -> Report:
    atomic = _run("atomic", [10, 20, 30, 40, 100],
                  [("confirmed", 10), ("confirmed", 20), ("confirmed", 30), ("failed: out_of_stock", 40)])
    saga = _run("saga", [5, 5, 5, 5, 10],
                [("confirmed", 100), ("confirmed", 200), ("failed: payment_declined", 300), ("unresolved", 999)],
                sagas={"COMPENSATED": 1, "PARKED": 0, "COMPLETED": 2},
                outbox=[{"pending": 3, "oldest_pending_age_seconds": 0.25},
                        {"pending": 7, "oldest_pending_age_seconds": 1.5}],
                audit_ok=False)
    return Report(title="Order flow comparison: atomic vs saga", started_at="2026-01-01 00:00:00 UTC",
                  machine={"cores": "2"}, settings={"users": 4}, versions={"locust": "2.47.0"},
                  modes=[atomic, saga])


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([10, 20, 30, 40, 100], 50) == 30
    assert percentile([10, 20, 30, 40, 100], 99) == 100
    assert percentile([], 50) is None


def test_summary_counts_what_the_samples_say(report: Report) -> None:
    atomic, saga = (summarize(m) for m in report.modes)
    assert atomic["seconds"] == 4.0
    assert atomic["orders_per_s"] == 5 / 4
    assert atomic["post_p50"] == 30 and atomic["post_p99"] == 100
    assert atomic["final_p50"] == 20
    assert atomic["seen_confirmed"] == 3 and atomic["seen_failed"] == {"out_of_stock": 1}
    assert atomic["errors"] == 1  # the failed GET
    assert atomic["compensated"] is None and atomic["outbox_max_lag_s"] is None
    # An unresolved order is an error and has no POST-to-final time.
    assert saga["unresolved"] == 1 and saga["errors"] == 2
    assert saga["final_p99"] == 300
    assert saga["compensated"] == 1
    assert saga["outbox_max_lag_s"] == 1.5 and saga["outbox_max_pending"] == 7


def test_table_has_a_column_per_mode_and_the_ratio(report: Report) -> None:
    header, rows = comparison_table(report)
    assert header == ["", "atomic", "saga", "saga/atomic"]
    table = {row[0]: row[1:] for row in rows}
    assert table["orders placed/s (POST /orders answered)"] == ["1.2", "1.2", "1.00x"]
    assert table["POST /orders p50 (ms)"] == ["30", "5", "0.17x"]
    assert table["POST to final status p50 (ms)"] == ["20", "200", "10.00x"]
    assert table["confirmed (clients saw)"] == ["3", "2", "0.67x"]
    assert table["failed: out_of_stock (clients saw)"] == ["1", "0", "0.00x"]
    assert table["failed: payment_declined (clients saw)"] == ["0", "1", "—"]
    assert table["compensated sagas"] == ["n/a", "1", "—"]
    assert table["outbox lag, worst during load (s)"] == ["n/a", "1.50", "—"]
    assert table["orders in DB after drain: confirmed / failed / pending"] == ["3 / 1 / 0", "2 / 1 / 0", "—"]
    assert table["audit"] == ["OK", "FAIL", "—"]
    # Known failure reasons are listed in the order of the flow's steps.
    labels = [row[0] for row in rows]
    assert labels.index("failed: out_of_stock (clients saw)") < labels.index("failed: payment_declined (clients saw)")


def test_no_ratio_column_without_atomic(report: Report) -> None:
    report.modes = report.modes[1:]
    header, _ = comparison_table(report)
    assert header == ["", "saga"]


def test_written_report_is_self_contained(report: Report, tmp_path: Path) -> None:
    markdown, page = write_report(report, tmp_path)
    text = markdown.read_text()
    assert "| POST /orders p95 (ms) | 100 | 10 | 0.10x |" in text
    assert "![Throughput over time](plot-throughput-over-time.png)" in text
    assert (tmp_path / "plot-throughput-over-time.png").read_bytes().startswith(b"\x89PNG")
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 3
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    assert '<td class="fail">FAIL</td>' in html
    assert "1 x GET /api/v1/products: unexpected 500" in html


def test_rates_and_percentiles_start_after_the_last_login() -> None:
    samples = [
        Sample(10.0, "POST", "/api/v1/auth/token", 500, True),
        Sample(11.0, "POST", "/api/v1/orders", 9999, True),  # while another user still logs in: not measured
        Sample(11.0, "FINAL", "order confirmed", 9999, True),
        Sample(12.0, "POST", "/api/v1/auth/token", 500, True),
        *(Sample(12.0 + i, "POST", "/api/v1/orders", ms, True) for i, ms in enumerate([10, 20, 30])),
        *(Sample(12.0 + i, "FINAL", "order confirmed", ms, True) for i, ms in enumerate([10, 20, 30])),
    ]
    result = ModeResult(mode="atomic", samples=samples, collected={}, audit_ok=True, audit_lines=[])
    summary = summarize(result)
    assert summary["seconds"] == 2.0
    assert summary["orders_per_s"] == 1.5
    assert summary["post_p99"] == 30 and summary["final_p99"] == 30
    assert summary["seen_confirmed"] == 4  # counts are for the whole run
    # Full bins only: the sample at 14.0 s opens a bin the run never filled, which would show a fake drop.
    assert orders_per_second_series(samples, bin_seconds=2) == [(0.0, 0.5), (2.0, 1.0)]


def test_reads_samples(tmp_path: Path) -> None:
    samples = tmp_path / "samples.csv"
    samples.write_text("timestamp,type,name,response_time_ms,ok\n1.5,FINAL,order confirmed,12.25,1\n")
    assert read_samples(samples) == [Sample(1.5, "FINAL", "order confirmed", 12.25, True)]
    assert read_samples(tmp_path / "missing.csv") == []
