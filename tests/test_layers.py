"""The import rules of the layout (README, "How it is built"), read from the source: every import statement,
function-level ones included, of every module of the product. A rule broken here is a layer leaking into
another: pure ML that needs a database, a workflow that reaches past the contracts, a cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pmls", "workflows", "activities", "workers", "api")
FIRST_PARTY = (*PACKAGES, "tests", "bench")
# Servers' drivers and clients: what makes code need a network or a running service.
DRIVERS = (
    "psycopg2",
    "psycopg",
    "asyncpg",
    "sqlalchemy",
    "alembic",
    "redis",
    "mlflow",
    "temporalio",
    "httpx",
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Alembic's scripts, run by Alembic
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The absolute names a module imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            # `from pmls.contracts import activities` imports a module, not a name: count it as one.
            out.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def _third_party(names: set[str]) -> set[str]:
    return {_top(n) for n in names if _top(n) not in sys.stdlib_module_names and _top(n) not in FIRST_PARTY}


def _within(prefix: str) -> dict[str, set[str]]:
    return {m: i for m, i in IMPORTS.items() if m == prefix or m.startswith(prefix + ".")}


def _offending(modules: dict[str, set[str]], bad) -> list[str]:
    return sorted(f"{m} imports {n}" for m, names in modules.items() for n in sorted(names) if bad(n))


def test_the_rules_see_the_product():
    # A broken walk would pass every rule below vacuously.
    assert {"pmls.ml.final", "workflows.training", "activities.data", "workers.main", "api.app"} <= set(
        IMPORTS
    )
    assert "pmls.contracts" in IMPORTS["workflows.training"] or any(
        n.startswith("pmls.contracts") for n in IMPORTS["workflows.training"]
    )


def test_ml_is_pure():
    """No database, registry or Temporal in pmls.ml, and none of the layers above it."""
    above = ("pmls.storage", "pmls.stack", "pmls.settings", "pmls.cli", "pmls.temporal", *PACKAGES[1:])
    found = _offending(
        _within("pmls.ml"),
        lambda n: _top(n) in DRIVERS or any(n == a or n.startswith(a + ".") for a in above),
    )
    assert not found, found


def test_contracts_are_stdlib_pydantic_and_the_sdk():
    allowed = {"pydantic", "temporalio"}
    found = _offending(
        _within("pmls.contracts"),
        lambda n: (
            (_top(n) in FIRST_PARTY and not n.startswith("pmls.contracts")) or (_third_party({n}) - allowed)
        ),
    )
    assert not found, found
    # The SDK only for names and activity stubs, in two modules; the rest is plain data.
    sdk = sorted(m for m, names in _within("pmls.contracts").items() if _third_party(names) & {"temporalio"})
    assert sdk == ["pmls.contracts.activities", "pmls.contracts.temporal"]


def test_workflows_import_only_contracts():
    found = _offending(
        _within("workflows"),
        lambda n: (
            (_top(n) in FIRST_PARTY and _top(n) != "workflows" and not n.startswith("pmls.contracts"))
            or (_third_party({n}) - {"temporalio"})
        ),
    )
    assert not found, found


def test_the_library_never_imports_a_face():
    """pmls is what the faces stand on; only the `pmls` command (the composition root of the CLI) starts them."""
    faces = ("workflows", "activities", "workers", "api")
    modules = {m: i for m, i in _within("pmls").items() if m != "pmls.cli"}
    assert not _offending(modules, lambda n: _top(n) in faces)
    assert not _offending(_within("activities"), lambda n: _top(n) in ("workflows", "workers", "api"))
    assert not _offending(_within("pmls.storage"), lambda n: n.startswith(("pmls.stack", "pmls.cli")))


def test_no_import_cycles():
    graph = {m: {n for n in names if n in MODULES and n != m} for m, names in IMPORTS.items()}
    # A package's __init__ is imported by its children implicitly; only explicit edges count.
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, cycles


@pytest.mark.parametrize("module", ["pmls.ml.data", "workflows.training"])
def test_a_forbidden_import_would_be_caught(module, monkeypatch):
    """The rules can fail: add the import each one forbids and they see it."""
    monkeypatch.setitem(IMPORTS, module, IMPORTS[module] | {"psycopg2", "activities.data"})
    with pytest.raises(AssertionError):
        test_ml_is_pure() if module.startswith("pmls.ml") else test_workflows_import_only_contracts()
    monkeypatch.setitem(IMPORTS, "pmls.ml.errors", IMPORTS["pmls.ml.errors"] | {"pmls.ml.data"})
    with pytest.raises(AssertionError):
        test_no_import_cycles()
