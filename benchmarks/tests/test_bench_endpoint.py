"""The bare endpoint of `make bench` does exactly one statement, and is not served unless asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rest_framework.test import APIRequestFactory

from benchmarks.api import BenchInsertApi
from benchmarks.models import BenchRow
from benchmarks.sqlcount import total

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_one_insert_per_post(django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    request = APIRequestFactory().post("/api/bench/insert", {"note": "hello"}, format="json")
    with django_assert_num_queries(1) as captured:
        response = BenchInsertApi.as_view()(request)
    assert response.status_code == 201, response.data
    assert captured.captured_queries[0]["sql"].startswith("INSERT"), captured.captured_queries
    assert BenchRow.objects.get(pk=response.data["id"]).note == "hello"


@pytest.mark.django_db
def test_not_served_unless_bench_endpoint_is_on(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/bench/insert", {"note": "x"}, content_type="application/json")
    assert response.status_code == 404, (response.status_code, response.content[:200])
    assert not BenchRow.objects.exists()


def test_statement_counter_counts_each_process_apart(tmp_path: Path) -> None:
    # A real process with the counter installed, as `make bench` starts them: two statements, then a forked
    # child (as gunicorn and Celery make their workers) with one of its own.
    script = textwrap.dedent("""
        import os, django
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
        django.setup()
        from django.db import connection, connections
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT 2")
        connections.close_all()
        child = os.fork()
        if child == 0:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 3")
            connections.close_all()
            os._exit(0)
        os.waitpid(child, 0)
    """)
    directory = tmp_path / "counts"
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                               env={**os.environ, "SHOP_BENCH_SQL_COUNT_DIR": str(directory)},
                               timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    per_process = sorted(int.from_bytes(p.read_bytes(), sys.byteorder) for p in directory.iterdir())
    assert per_process == [1, 2], per_process
    assert total(directory) == 3
