"""What the `machine-health` commands share: error handling, JSON output, tables, options.

Apart from `cli.py` so that a domain's own commands (`domains/<name>/commands.py`, registered by
`cli.py` under `train`, `benchmark`, `evaluate`) can use it without importing the CLI itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from machine_health.config import Settings, get_settings
from machine_health.errors import MachineHealthError
from machine_health.logs import configure_logging

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data root (default: settings).")
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")]


def command(func: F) -> F:
    """Configure logging and report our errors as one red line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            configure_logging(get_settings())
            return func(*args, **kwargs)
        except MachineHealthError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def write_json(result: dict[str, Any], path: Path | None) -> None:
    """Write `result` to `path` (if given) and echo it to stdout as one JSON line."""
    text = json.dumps(result, default=str)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
    typer.echo(text)


def settings_with_data_dir(data_dir: Path | None) -> Settings:
    settings = get_settings()
    return settings.model_copy(update={"data_dir": data_dir}) if data_dir else settings


SeedOption = Annotated[int, typer.Option(help="Random seed of the training.")]
ModelUriOption = Annotated[
    str, typer.Option("--model-uri", help="models:/name@alias, models:/name/N or a folder.")
]


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """A rich table of `rows` restricted to `columns` (floats rounded)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(
            *[
                f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                for c in columns
            ]
        )
    console.print(table)
