from __future__ import annotations

from benchmarks.models import BenchRow


def bench_row_create(*, note: str) -> BenchRow:
    # Autocommit, no transaction block: exactly one statement (INSERT ... RETURNING id) reaches the server.
    return BenchRow.objects.create(note=note)
