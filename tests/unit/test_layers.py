"""The package's layers, read from its source (no import runs): who may import whom.

A module's own imports count wherever they are (a function-local one runs as soon as that
function does); what those modules import in turn counts when it runs at import time (module
level, not under `TYPE_CHECKING`). A module imports its parent packages as well (`a.b.c` runs
`a/__init__` and `a/b/__init__`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "machine_health"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE
#: third-party packages that make a module heavy to import (seconds, hundreds of MB)
HEAVY = {"tensorflow", "keras", "sklearn", "mlflow", "skops", "treelite", "tl2cgen", "torch"}


def _name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, ast.Module]:
    return {_name(p): ast.parse(p.read_text(), str(p)) for p in SRC.rglob("*.py")}


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _at_import(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of `body` that run when the module is imported (not in functions)."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _at_import(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _at_import(getattr(node, field, []))


@cache
def _imports(module: str, everywhere: bool = True) -> tuple[frozenset[str], frozenset[str]]:
    """(modules of the project, top-level third-party packages) that `module` imports:
    `everywhere`, or only at import time."""
    tree, modules = _modules()[module], _modules()
    is_package = (SRC.parent / module.replace(".", "/") / "__init__.py").exists()
    project: set[str] = set()
    others: set[str] = set()
    nodes = ast.walk(tree) if everywhere else _at_import(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one
            targets = [base] + [
                f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules
            ]
        else:
            continue
        for target in targets:
            top = target.split(".")[0]
            if top == PACKAGE:
                project |= {n for n in _with_parents(target) if n in modules and n != PACKAGE}
            elif top:
                others.add(top)
    project.discard(module)
    return frozenset(project), frozenset(others)


@cache
def _reach(module: str) -> frozenset[str]:
    """Every project module that `module` imports, and what those run at import time."""
    seen = set(_imports(module)[0])
    todo = list(seen)
    while todo:
        for dep in _imports(todo.pop(), everywhere=False)[0]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return frozenset(seen - {module})


def _layer(prefix: str) -> list[str]:
    return sorted(m for m in _modules() if m == prefix or m.startswith(prefix + "."))


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_source_is_read() -> None:
    # the parametrized layers are not empty (an empty parameter set would only be a skip)
    read = set(_modules())
    assert {"machine_health.archive.client", "machine_health.telemetry"} <= read
    assert {"machine_health.ui.app", "machine_health.security"} <= read


@pytest.mark.parametrize("module", _layer(f"{PACKAGE}.archive"))
def test_the_archive_never_imports_the_layers_above_it(module: str) -> None:
    above = (f"{PACKAGE}.{layer}" for layer in ("monitoring", "pipeline", "api", "ui"))
    wrong = sorted(m for m in _reach(module) if _in(m, *above))
    assert not wrong, f"{module} imports {wrong}"


def test_archive_and_monitoring_form_no_cycle() -> None:
    archive, monitoring = f"{PACKAGE}.archive", f"{PACKAGE}.monitoring"
    back = sorted(
        (a, m) for a in _layer(archive) for m in _reach(a) if _in(m, monitoring)
    )  # monitoring -> archive is the allowed direction
    assert not back


def test_telemetry_imports_nothing_of_the_project() -> None:
    project, _ = _imports(f"{PACKAGE}.telemetry")
    assert not project


@pytest.mark.parametrize("module", _layer(f"{PACKAGE}.ui"))
def test_the_ui_reaches_neither_the_archive_nor_the_models(module: str) -> None:
    """The UI talks to the API over HTTP: no store client, and no module that loads the ML
    frameworks (data loaders and feature constants of a domain are fine)."""
    reach = _reach(module) | {module}
    archive = sorted(m for m in reach if _in(m, f"{PACKAGE}.archive"))
    heavy = sorted(m for m in reach if _imports(m, everywhere=m == module)[1] & HEAVY)
    assert not archive, f"{module} imports {archive}"
    assert not heavy, f"{module} imports {heavy}, which import {sorted(HEAVY)}"


def test_password_hashing_needs_no_web_layer() -> None:
    assert not _in_any(_reach(f"{PACKAGE}.security"), f"{PACKAGE}.api")


def _in_any(modules: frozenset[str], prefix: str) -> bool:
    return any(_in(m, prefix) for m in modules)
