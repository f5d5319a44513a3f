"""The README's settings tables and the variables the code reads through shop.env stay in step."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shop import env

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
READERS = {name for name in dir(env) if name.startswith("get_")}
SKIP_DIRS = {".venv", ".data", "reports", "tests", "node_modules", ".git"}


def _project_files(suffix: str) -> list[Path]:
    return [path for path in REPO_ROOT.rglob(f"*{suffix}")
            if not SKIP_DIRS.intersection(path.relative_to(REPO_ROOT).parts)]


def variables_read() -> set[str]:
    """Every NAME in env.get_*("NAME", ...) (or get_*("NAME") inside shop/env.py itself)."""
    names = {f"{service.upper()}_DATABASE_URL" for service in env.SERVICES}  # read by name built from SERVICES
    for path in _project_files(".py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            via_env = isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "env"
            if called in READERS and (via_env or path.name == "env.py"):
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return names


def variables_documented() -> set[str]:
    """The names in the first column of every `| variable | ... |` table of the README."""
    names: set[str] = set()
    in_table = False
    for line in README.read_text().splitlines():
        if line.startswith("| variable |"):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            in_table = False
        if in_table:
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_every_variable_read_is_in_a_readme_settings_table():
    missing = sorted(variables_read() - variables_documented())
    assert not missing, f"read through shop.env but not in the README's settings tables: {missing}"


def test_every_variable_in_the_tables_is_read_somewhere():
    sources = "\n".join(path.read_text() for path in [*_project_files(".py"), REPO_ROOT / "Makefile"])
    unread = sorted(name for name in variables_documented() - variables_read() if f'"{name}"' not in sources
                    and f"{name}=" not in sources and f"$({name})" not in sources)
    assert not unread, f"in the README's settings tables but read nowhere: {unread}"


def test_the_parser_finds_what_it_should():
    read = variables_read()
    assert {"ORDER_FLOW", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ORDERS_DATABASE_URL"} <= read
