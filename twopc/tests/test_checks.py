"""The start-up check of ORDER_FLOW=2pc against a server whose max_prepared_transactions is 0 (PostgreSQL's
default): the shop refuses to start, in one line that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from twopc.tests.conftest import REPO_ROOT

# A server of the machine's own, as a user would bring it (PostgreSQL's defaults); the test needs it to be there.
SERVER = os.environ.get("TWOPC_CHECK_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_without_prepared_transactions() -> bool:
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            return conn.execute("SHOW max_prepared_transactions").fetchone()[0] == "0"
    except psycopg.Error:
        return False


@pytest.mark.skipif(not _server_without_prepared_transactions(),
                    reason=f"needs a PostgreSQL with max_prepared_transactions = 0 at {SERVER}")
def test_a_server_without_prepared_transactions_refuses_2pc_in_one_line():
    env = {**os.environ, "ORDER_FLOW": "2pc", "DATABASE_URL": SERVER,
           **{f"{service}_DATABASE_URL": SERVER for service in ("ORDERS", "PAYMENTS", "INVENTORY", "SHIPPING")}}

    result = subprocess.run([sys.executable, "manage.py", "recover_2pc", "--once"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "max_prepared_transactions" in lines[0] and "has 0" in lines[0], lines[0]
