"""The comparison report: one table of every mode side by side, plots, and what was measured on what.

Everything here works on data already collected (Locust's CSV files, the per-request samples the locustfile
writes, the JSON of loadtests.collect, the audit's output), so it can be rebuilt and tested without running
anything. `write_report` writes report.md and a self-contained report.html (plots inlined as base64 PNGs).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORDERS_NAME = "/api/v1/orders"
LOGIN_NAME = "/api/v1/auth/token"
FINAL_TYPE = "FINAL"
BASELINE_MODE = "atomic"
# Known failure reasons first, in the order of the flow's steps; any other reason follows alphabetically.
REASONS = ("out_of_stock", "payment_declined", "insufficient_funds", "payment_unavailable", "undeliverable")


@dataclass(frozen=True)
class Sample:
    timestamp: float
    type: str
    name: str
    ms: float
    ok: bool


@dataclass
class ModeResult:
    mode: str
    samples: list[Sample]
    # The JSON printed by `loadtests.collect stats`.
    collected: dict[str, Any]
    audit_ok: bool
    audit_lines: list[str]
    outbox_samples: list[dict[str, Any]] = field(default_factory=list)
    # (method, name, error, occurrences) from Locust's failures.csv.
    failures: list[tuple[str, str, str, int]] = field(default_factory=list)
    locust_html: str = ""
    layout: str = ""


@dataclass
class CostTable:
    """`make bench`'s table (loadtests.bench): one column per mode, then its verdict lines and notes."""

    header: list[str]
    rows: list[list[str]]
    verdicts: list[str]
    notes: list[str]


@dataclass
class Report:
    title: str
    started_at: str
    machine: dict[str, str]
    settings: dict[str, Any]
    versions: dict[str, str]
    modes: list[ModeResult]
    cost: CostTable | None = None


# -- reading Locust's and the locustfile's files ----------------------------------------------------------


def read_samples(path: Path) -> list[Sample]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [Sample(float(row["timestamp"]), row["type"], row["name"], float(row["response_time_ms"]),
                       row["ok"] == "1") for row in csv.DictReader(fh)]


def read_failures(path: Path) -> list[tuple[str, str, str, int]]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return [(row["Method"], row["Name"], row["Error"], int(row["Occurrences"])) for row in csv.DictReader(fh)]


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- numbers ----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def window_start(samples: Sequence[Sample]) -> float | None:
    """When the last user had logged in: the steady load starts there.

    Logging in hashes a password (hundreds of milliseconds of CPU, on purpose), so while users are still
    logging in the shop is measured under a load no shopper makes."""
    logins = [s.timestamp for s in samples if s.name == LOGIN_NAME]
    if logins:
        return max(logins)
    return min((s.timestamp for s in samples), default=None)


def steady(samples: Sequence[Sample]) -> list[Sample]:
    start = window_start(samples)
    return [s for s in samples if start is not None and s.timestamp >= start and s.name != LOGIN_NAME]


def window_seconds(samples: Sequence[Sample]) -> float:
    start = window_start(samples)
    if start is None:
        return 0.0
    return max(s.timestamp for s in samples) - start


def post_latencies(samples: Sequence[Sample]) -> list[float]:
    return [s.ms for s in samples if s.type == "POST" and s.name == ORDERS_NAME]


def final_latencies(samples: Sequence[Sample]) -> list[float]:
    return [s.ms for s in samples if s.type == FINAL_TYPE and s.ok]


def orders_per_second_series(samples: Sequence[Sample], bin_seconds: float = 2.0) -> list[tuple[float, float]]:
    """(seconds since the first request, POST /orders answered per second) in bins of `bin_seconds`.

    Full bins only: the last, partial one would show a drop that is only the load ending inside it."""
    if not samples:
        return []
    start = min(s.timestamp for s in samples)
    end = max(s.timestamp for s in samples)
    counts = Counter(int((s.timestamp - start) // bin_seconds) for s in samples
                     if s.type == "POST" and s.name == ORDERS_NAME)
    bins = int((end - start) // bin_seconds)
    return [(i * bin_seconds, counts.get(i, 0) / bin_seconds) for i in range(bins)]


def outcomes(result: ModeResult) -> Counter[str]:
    """What clients saw at the end of each order: 'confirmed', 'failed: <reason>', 'unresolved'."""
    return Counter(s.name.removeprefix("order ") for s in result.samples if s.type == FINAL_TYPE)


def summarize(result: ModeResult) -> dict[str, Any]:
    """Rates and percentiles over the steady window (after the last login); counts over the whole run, so
    they can be checked against the database."""
    seconds = window_seconds(result.samples)
    window = steady(result.samples)
    posts, finals = post_latencies(window), final_latencies(window)
    seen = outcomes(result)
    db_orders = result.collected.get("orders", {})
    by_status = db_orders.get("by_status", {})
    sagas = result.collected.get("sagas")
    lags = [s["oldest_pending_age_seconds"] for s in result.outbox_samples if "oldest_pending_age_seconds" in s]
    pendings = [s["pending"] for s in result.outbox_samples if "pending" in s]
    summary: dict[str, Any] = {
        "seconds": seconds,
        "orders_per_s": len(posts) / seconds if seconds else 0.0,
        "confirmed_per_s": sum(1 for s in window if s.name == "order confirmed") / seconds if seconds else 0.0,
        "requests_per_s": sum(1 for s in window if s.type != FINAL_TYPE) / seconds if seconds else 0.0,
        "errors": sum(1 for s in result.samples if not s.ok),
        # Lock waits past their bound, answered 503 and retried by the client (2pc's blocking, seen by clients).
        "conflicts": sum(1 for s in result.samples if s.name.endswith("(503 concurrency-conflict)")),
        "seen_confirmed": seen.get("confirmed", 0),
        "seen_failed": {k.removeprefix("failed: "): v for k, v in seen.items() if k.startswith("failed: ")},
        "unresolved": seen.get("unresolved", 0),
        "db_confirmed": by_status.get("CONFIRMED", 0),
        "db_failed": by_status.get("FAILED", 0),
        "db_pending": by_status.get("PENDING", 0),
        "compensated": None if sagas is None else sagas.get("COMPENSATED", 0),
        "parked": None if sagas is None else sagas.get("PARKED", 0),
        "outbox_max_lag_s": max(lags) if lags else None,
        "outbox_max_pending": max(pendings) if pendings else None,
        "drain_s": result.collected.get("drain_seconds"),
        "audit_ok": result.audit_ok,
    }
    for p in (50, 95, 99):
        summary[f"post_p{p}"] = percentile(posts, p)
        summary[f"final_p{p}"] = percentile(finals, p)
    # From the services' commit timestamps (loadtests.collect commit_spans), in ms; None where not collected.
    spans = result.collected.get("spans") or {}
    for name in ("window", "final"):
        for q in ("p50", "p95", "p99", "max"):
            value = (spans.get(name) or {}).get(q)
            summary[f"commit_{name}_{q}"] = None if value is None else value * 1000
    messages = result.collected.get("messages") or {}
    summary["messages_per_order"] = (messages["messages"] / messages["orders"]) if messages.get("orders") else None
    return summary


def ordered_reasons(reasons: Iterable[str]) -> list[str]:
    found = set(reasons)
    return [r for r in REASONS if r in found] + sorted(found - set(REASONS))


# -- the table --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[dict[str, Any]], Any]
    fmt: str = "{:.0f}"
    # Whether "saga/atomic" means something for this row (a rate, a latency, a count).
    ratio: bool = True


def _rows(summaries: Sequence[dict[str, Any]]) -> list[Row]:
    rows = [
        Row("measured window after the last login (s)", lambda s: s["seconds"], "{:.1f}", ratio=False),
        Row("orders placed/s (POST /orders answered)", lambda s: s["orders_per_s"], "{:.1f}"),
        Row("orders confirmed/s (as clients saw them)", lambda s: s["confirmed_per_s"], "{:.1f}"),
        Row("HTTP requests/s (all)", lambda s: s["requests_per_s"], "{:.1f}"),
    ]
    rows += [Row(f"POST /orders p{p} (ms)", lambda s, p=p: s[f"post_p{p}"]) for p in (50, 95, 99)]
    rows += [Row(f"POST to final status p{p} (ms)", lambda s, p=p: s[f"final_p{p}"]) for p in (50, 95, 99)]
    rows += [Row(f"POST to final, server commits {q} (ms)", lambda s, q=q: s.get(f"commit_final_{q}"))
             for q in ("p50", "p95", "p99")]
    rows += [Row(f"window of inconsistency {q} (ms)", lambda s, q=q: s.get(f"commit_window_{q}"), "{:.1f}")
             for q in ("p50", "p95", "p99", "max")]
    rows.append(Row("broker messages per order", lambda s: s.get("messages_per_order"), "{:.1f}"))
    rows.append(Row("confirmed (clients saw)", lambda s: s["seen_confirmed"], "{:d}"))
    reasons = ordered_reasons(r for s in summaries for r in s["seen_failed"])
    rows += [Row(f"failed: {r} (clients saw)", lambda s, r=r: s["seen_failed"].get(r, 0), "{:d}") for r in reasons]
    rows += [
        Row("still pending when polling gave up", lambda s: s["unresolved"], "{:d}"),
        Row("orders in DB after drain: confirmed / failed / pending",
            lambda s: f"{s['db_confirmed']} / {s['db_failed']} / {s['db_pending']}", "{}", ratio=False),
        Row("compensated sagas", lambda s: s["compensated"], "{:d}"),
        Row("parked sagas", lambda s: s["parked"], "{:d}", ratio=False),
        Row("outbox lag, worst during load (s)", lambda s: s["outbox_max_lag_s"], "{:.2f}"),
        Row("outbox pending, most during load", lambda s: s["outbox_max_pending"], "{:d}"),
        Row("drain until all final (s)", lambda s: s["drain_s"], "{:.1f}", ratio=False),
        Row("503 concurrency-conflict answers (clients retried)", lambda s: s["conflicts"], "{:d}", ratio=False),
        Row("errors (Locust failures)", lambda s: s["errors"], "{:d}", ratio=False),
        Row("audit", lambda s: "OK" if s["audit_ok"] else "FAIL", "{}", ratio=False),
    ]
    return rows


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a"
    if fmt == "{:d}":
        return f"{int(value):d}"
    return fmt.format(value)


def comparison_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one column per mode, then `<mode>/atomic` for every other mode when atomic ran."""
    modes = [m.mode for m in report.modes]
    summaries = [summarize(m) for m in report.modes]
    others = [i for i, mode in enumerate(modes) if mode != BASELINE_MODE] if BASELINE_MODE in modes else []
    base = modes.index(BASELINE_MODE) if others else None
    header = ["", *modes, *(f"{modes[i]}/{BASELINE_MODE}" for i in others)]
    table = []
    for row in _rows(summaries):
        values = [row.value(s) for s in summaries]
        cells = [row.label, *(_fmt(v, row.fmt) for v in values)]
        for i in others:
            ratio = ""
            if row.ratio and isinstance(values[i], int | float) and isinstance(values[base], int | float) \
                    and values[base]:
                ratio = f"{values[i] / values[base]:.2f}x"
            cells.append(ratio or "—")
        table.append(cells)
    return header, table


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    aligns = ["---", *(["---:"] * (len(header) - 1))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------------------


def _figure():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.grid(True, alpha=0.3)
    return plt, fig, ax


def _png(plt, fig) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _ecdf_plot(title: str, series: dict[str, list[float]], xlabel: str) -> bytes | None:
    series = {mode: sorted(values) for mode, values in series.items() if values}
    if not series:
        return None
    plt, fig, ax = _figure()
    for mode, values in series.items():
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=f"{mode} (n={n})")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share at or below")
    for p in (0.5, 0.95, 0.99):
        ax.axhline(p, color="grey", linewidth=0.6, linestyle=":")
    ax.set_title(title)
    ax.legend()
    return _png(plt, fig)


def plots(report: Report) -> dict[str, bytes]:
    """PNG bytes by title: throughput over time, POST latency and POST-to-final distributions."""
    made: dict[str, bytes] = {}
    if any(m.samples for m in report.modes):
        plt, fig, ax = _figure()
        for m in report.modes:
            series = orders_per_second_series(m.samples)
            if not series:
                continue
            (line,) = ax.plot([t for t, _ in series], [r for _, r in series], label=m.mode)
            start = window_start(m.samples)
            if start is not None:
                ax.axvline(start - min(s.timestamp for s in m.samples), color=line.get_color(), linestyle=":",
                           linewidth=1)
        ax.set_xlabel("seconds since the first request (dotted: last user logged in)")
        ax.set_ylabel("POST /orders answered per second")
        ax.set_title("Throughput over time")
        ax.legend()
        made["Throughput over time"] = _png(plt, fig)
    latency = _ecdf_plot("POST /api/v1/orders latency",
                         {m.mode: post_latencies(steady(m.samples)) for m in report.modes},
                         "response time (ms, log scale)")
    if latency:
        made["POST /orders latency distribution"] = latency
    final = _ecdf_plot("Time from POST to final order status",
                       {m.mode: final_latencies(steady(m.samples)) for m in report.modes},
                       "POST to CONFIRMED/FAILED (ms, log scale)")
    if final:
        made["POST-to-final distribution"] = final
    return made


# -- rendering --------------------------------------------------------------------------------------------

NOTES = (
    "Rates, latency percentiles and distributions cover the steady window, from the moment the last user had "
    "logged in (logins hash passwords, which would otherwise dominate the first seconds) to the end; counts "
    "cover the whole run. Percentiles are exact (nearest rank) over the locustfile's own per-request samples; "
    "Locust's CSV rounds them into buckets. \"Clients saw\" counts the final status each client "
    "observed: in atomic mode a failed order rolls back and leaves no row, so the database columns count "
    "only what the audit can check. Replays (same Idempotency-Key and body sent again) are not counted as "
    "orders; a replay that differs from the first answer is an error."
)


def _key_values(title: str, values: dict[str, Any]) -> list[str]:
    lines = [f"### {title}", ""]
    lines += [f"- {key}: {value}" for key, value in values.items()]
    return [*lines, ""]


def render_markdown(report: Report, plot_files: dict[str, str] | None = None) -> str:
    header, rows = comparison_table(report)
    lines = [f"# {report.title}", "", f"Started {report.started_at}.", "", markdown_table(header, rows), "",
             NOTES, ""]
    for title, filename in (plot_files or {}).items():
        lines += [f"![{title}]({filename})", ""]
    if report.cost is not None:
        lines += ["## What an order costs", "", markdown_table(report.cost.header, report.cost.rows), ""]
        lines += [*(f"- {line}" for line in report.cost.verdicts), "", *report.cost.notes, ""]
    for m in report.modes:
        lines += [f"## {m.mode}", ""]
        if m.layout:
            lines += [f"Processes: {m.layout}", ""]
        lines += ["Audit:", "", "```", *m.audit_lines, "```", ""]
        if m.failures:
            lines += ["Locust failures:", ""]
            lines += [f"- {count} x {method} {name}: {error}" for method, name, error, count in m.failures]
            lines.append("")
        if m.locust_html:
            lines += [f"Locust's own report: [{m.locust_html}]({m.locust_html})", ""]
    lines += ["## Machine, settings and versions", ""]
    lines += _key_values("Machine", report.machine)
    lines += _key_values("Settings", report.settings)
    lines += _key_values("Versions", report.versions)
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
td:not(:first-child), th:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) { background: #f6f6f6; }
.ok { color: #176a2c; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
pre { background: #f4f4f4; padding: 0.6rem; overflow-x: auto; }
img { max-width: 100%; display: block; margin: 1rem 0; }
.note { color: #555; max-width: 60rem; }
"""


def _html_cell(cell: str) -> str:
    css = {"OK": "ok", "FAIL": "fail"}.get(cell)
    return f'<td class="{css}">{html.escape(cell)}</td>' if css else f"<td>{html.escape(cell)}</td>"


def _html_key_values(title: str, values: dict[str, Any]) -> str:
    items = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in values.items())
    return f"<h3>{html.escape(title)}</h3><table>{items}</table>"


def render_html(report: Report, pngs: dict[str, bytes]) -> str:
    header, rows = comparison_table(report)
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1><p>Started {html.escape(report.started_at)}.</p>",
        "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>",
        *("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in rows),
        f"</tbody></table><p class=\"note\">{html.escape(NOTES)}</p>",
    ]
    for title, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(title)}</h2><img alt=\"{html.escape(title)}\" "
                     f"src=\"data:image/png;base64,{data}\">")
    if report.cost is not None:
        cost = report.cost
        parts += [
            "<h2>What an order costs</h2><table><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in cost.header) + "</tr></thead><tbody>",
            *("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cost.rows),
            "</tbody></table><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in cost.verdicts) + "</ul>",
            *(f"<p class=\"note\">{html.escape(note)}</p>" for note in cost.notes),
        ]
    for m in report.modes:
        parts.append(f"<h2>{html.escape(m.mode)}</h2>")
        if m.layout:
            parts.append(f"<p>Processes: {html.escape(m.layout)}</p>")
        parts.append("<p>Audit:</p><pre>" + html.escape("\n".join(m.audit_lines)) + "</pre>")
        if m.failures:
            parts.append("<p>Locust failures:</p><ul>" + "".join(
                f"<li>{count} x {html.escape(method)} {html.escape(name)}: {html.escape(error)}</li>"
                for method, name, error, count in m.failures) + "</ul>")
        if m.locust_html:
            parts.append(f"<p>Locust's own report: <a href=\"{html.escape(m.locust_html)}\">"
                         f"{html.escape(m.locust_html)}</a></p>")
    parts.append("<h2>Machine, settings and versions</h2>")
    parts += [_html_key_values("Machine", report.machine), _html_key_values("Settings", report.settings),
              _html_key_values("Versions", report.versions)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: Report, directory: Path) -> tuple[Path, Path]:
    """Write report.md (with the plots beside it as PNG files) and the self-contained report.html."""
    directory.mkdir(parents=True, exist_ok=True)
    pngs = plots(report)
    plot_files = {}
    for title, png in pngs.items():
        filename = "plot-" + "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-") + ".png"
        (directory / filename).write_bytes(png)
        plot_files[title] = filename
    markdown = directory / "report.md"
    markdown.write_text(render_markdown(report, plot_files))
    page = directory / "report.html"
    page.write_text(render_html(report, pngs))
    return markdown, page
