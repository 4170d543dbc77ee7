"""The README documents every setting (its table is generated from `Settings`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "settings_table", REPO / "scripts" / "settings_table.py"
)
assert spec
assert spec.loader
settings_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(settings_table)


def test_readme_configuration_table_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert settings_table.render(readme) == readme, (
        "README configuration table is stale: "
        "run `.venv/bin/python scripts/settings_table.py --write`"
    )


def test_readme_leads_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make run" in first_block
    assert "make test" in first_block
