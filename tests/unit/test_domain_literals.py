"""No code outside a domain's package names a domain: generic code asks the registry.

A string constant equal to a domain name ("vibration", "turbofan", "acoustic", or any name in
`machine_health.domains.DOMAINS`) in code under src/ outside src/machine_health/domains/, or in
airflow/dags/ outside the per-domain DAG files (`retrain_<domain>.py`), is a branch that belongs
behind the `Domain` interface. Docstrings and comments may speak of domains.
"""

from __future__ import annotations

import ast
from pathlib import Path

from machine_health.domains import DOMAINS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "machine_health"
NAMES = frozenset({"vibration", "turbofan", "acoustic", *DOMAINS})


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are a module's, class's or function's docstring."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def domain_literals(path: Path) -> list[str]:
    """`file:line: 'name'` of every string constant in code equal to a domain name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    return [
        f"{path.relative_to(REPO) if REPO in path.parents else path}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in NAMES
        and id(node) not in skip
    ]


def checked_files() -> list[Path]:
    generic = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "domains") not in p.parents]
    dags = REPO / "airflow" / "dags"
    per_domain = {f"retrain_{name}.py" for name in NAMES}
    return [*generic, *(p for p in dags.glob("*.py") if p.name not in per_domain)]


def test_the_check_sees_a_literal_and_ignores_docstrings(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"  # never in the shared source tree
    sample.write_text('"""turbofan"""\n\nBAD = {"vibration": 1}\n# "turbofan"\n')
    assert [hit.rsplit(": ", 1)[1] for hit in domain_literals(sample)] == ["'vibration'"]


def test_no_domain_name_in_generic_code() -> None:
    files = checked_files()
    assert any(p.name == "retrain_factory.py" for p in files)
    assert PACKAGE / "api" / "app.py" in files  # the generic code is read, not an empty glob
    assert not any(
        "domains" in p.relative_to(PACKAGE).parts[:1] for p in files if PACKAGE in p.parents
    )
    hits = [hit for path in files for hit in domain_literals(path)]
    assert not hits, "domain names in generic code (move the branch behind Domain):\n" + "\n".join(
        hits
    )
