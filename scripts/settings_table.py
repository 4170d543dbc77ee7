"""Print (or --write into README.md) the configuration table generated from `Settings`.

The README's table sits between the two markers below; a test fails when it is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic.fields import FieldInfo

from machine_health.config import Settings

BEGIN = "<!-- settings-table:begin -->"
END = "<!-- settings-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _default(field: FieldInfo) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, list):
        value = ",".join(value)
    return f"`{value}`"


def table() -> str:
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| `MH_{name.upper()}` | {_default(field)} | {text} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    head, _, rest = readme.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        README.write_text(render(README.read_text()))
    else:
        sys.stdout.write(table() + "\n")
