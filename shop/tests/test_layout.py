"""The layout's two import rules, read from the source with `ast` (no Django needed):

- the saga engine (`sagas/`, its tests aside) imports no service app: it runs any saga definition;
- a service's models are read only by that service itself, its migrations, admin and tests: everything else
  goes through its `selectors.py` and `services.py` (DESIGN.md section 2).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import REPO_ROOT
from shop.env import SERVICES

SKIPPED_FOLDERS = {".venv", ".data", ".git", "node_modules", "reports", "__pycache__"}


def imported_modules(source: str) -> Iterator[str]:
    """Every module `source` imports, at any depth (imports inside functions count too), as a dotted name;
    `from x import y` yields `x.y` as well as `x`, since `y` may be a module (`from orders import models`)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def models_read_by_label(source: str) -> Iterator[str]:
    """App labels `source` names to `apps.get_model("label", ...)` / `get_model("label.Model")`."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "get_model"):
            yield node.args[0].value.split(".")[0]


def python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        if not SKIPPED_FOLDERS.intersection(path.relative_to(REPO_ROOT).parts):
            yield path


def is_test_code(path: Path) -> bool:
    return "tests" in path.parts or path.name.startswith("test_") or path.name == "conftest.py"


def engine_violations() -> list[str]:
    found = []
    for path in python_files(REPO_ROOT / "sagas"):
        if is_test_code(path.relative_to(REPO_ROOT)):
            continue
        for module in imported_modules(path.read_text()):
            if module.split(".")[0] in SERVICES:
                found.append(f"{path.relative_to(REPO_ROOT)} imports {module}")
    return sorted(set(found))


def service_of(relative: Path) -> str | None:
    return relative.parts[0] if relative.parts[0] in SERVICES else None


def model_violations(files: list[tuple[Path, str]]) -> list[str]:
    """`(path relative to the checkout, source)` pairs -> the reads of another service's models among them."""
    found = []
    for relative, source in files:
        if is_test_code(relative) or "migrations" in relative.parts or relative.name == "admin.py":
            continue
        own = service_of(relative)
        for module in imported_modules(source):
            parts = module.split(".")
            if len(parts) >= 2 and parts[0] in SERVICES and parts[1] == "models" and parts[0] != own:
                found.append(f"{relative} imports {parts[0]}.models")
        for label in models_read_by_label(source):
            if label in SERVICES and label != own:
                found.append(f"{relative} reads {label} models by get_model")
    return sorted(set(found))


def test_the_saga_engine_imports_no_service_app():
    assert engine_violations() == []


def test_no_module_outside_a_service_reads_its_models():
    files = [(path.relative_to(REPO_ROOT), path.read_text()) for path in python_files(REPO_ROOT)]
    assert len(files) > 50  # the walk found the checkout
    assert model_violations(files) == []


@pytest.mark.parametrize(("path", "source"), [
    ("operations/audit.py", "from orders.models import Order"),
    ("loadtests/collect.py", "def f():\n    from payments import models\n"),
    ("sagas/selectors.py", "import inventory.models"),
    ("payments/services.py", "from shipping.models import Shipment"),
    ("shop/api.py", "from django.apps import apps\napps.get_model('orders', 'Order')"),
])
def test_the_model_rule_catches_a_read_from_outside(path, source):
    assert model_violations([(Path(path), source)]) != []


@pytest.mark.parametrize(("path", "source"), [
    ("orders/flows/atomic.py", "from orders.models import Order"),
    ("payments/admin.py", "from payments.models import Payment"),
    ("inventory/migrations/0001_initial.py", "from inventory.models import Product"),
    ("sagas/tests/test_order_saga.py", "from orders.models import Order"),
    ("operations/audit.py", "from orders.selectors import OrderStatus"),
])
def test_the_model_rule_allows_the_service_itself_its_admin_migrations_tests_and_selectors(path, source):
    assert model_violations([(Path(path), source)]) == []


def test_the_engine_rule_sees_imports_inside_functions():
    source = "def inner():\n    from orders.flows import place_order\n"
    assert [m for m in imported_modules(source) if m.split(".")[0] in SERVICES] == ["orders.flows",
                                                                                   "orders.flows.place_order"]
