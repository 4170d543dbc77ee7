"""`machine-health benchmark|train|evaluate vibration` (registered by `machine_health.cli`).

Light at import (the CLI imports it at start-up): the work is imported when a command runs.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from machine_health.cli_support import (
    DataDirOption,
    JsonOption,
    ModelUriOption,
    SeedOption,
    console,
    print_table,
    settings_with_data_dir,
    write_json,
)


def _print(title: str, result: dict[str, Any]) -> None:
    rows = [
        {"metric": f"{section}.{key}", "value": value}
        for section in ("classifier", "anomaly")
        for key, value in result[section].items()
        if key not in ("confusion", "labels")
    ]
    rows += [
        {"metric": key, "value": result[key]} for key in ("train_seconds", "predict_ms_per_window")
    ]
    print_table(title, rows, ["metric", "value"])


def benchmark(
    data_dir: DataDirOption = None, json_out: JsonOption = None, seed: SeedOption = 0
) -> None:
    """Train on the first 70 % of every recording, score the last 30 %, log an MLflow run."""
    from machine_health.domains.vibration import workflow

    settings = settings_with_data_dir(data_dir)
    result = workflow.benchmark(settings, settings.data_dir, seed=seed)
    _print("vibration benchmark (time split, test portion)", result)
    write_json(result, json_out)


def train(
    data_dir: DataDirOption = None, json_out: JsonOption = None, seed: SeedOption = 0
) -> None:
    """Train on the train portion, register it (version 1 becomes champion when none exists)."""
    from machine_health.domains.vibration import workflow

    settings = settings_with_data_dir(data_dir)
    result = workflow.train_and_register(settings, settings.data_dir, seed=seed)
    _print(f"{result['model']} v{result['version']} (test portion)", result)
    console.print(f"champion: {'yes' if result['champion'] else 'unchanged'}")
    write_json(result, json_out)


def evaluate(
    model_uri: ModelUriOption,
    data_dir: DataDirOption = None,
    portion: Annotated[str, typer.Option(help="test (last 30 %) or all.")] = "test",
    json_out: JsonOption = None,
) -> None:
    """Score a trained or registered model on a labelled manifest directory."""
    from machine_health.domains.vibration import workflow

    if portion not in ("test", "all"):
        raise typer.BadParameter("--portion must be test or all")
    settings = settings_with_data_dir(data_dir)
    result = workflow.evaluate_model(
        settings,
        model_uri,
        settings.data_dir,
        portion=portion,  # type: ignore[arg-type]
    )
    _print(f"{model_uri} on {settings.data_dir} ({portion})", result)
    write_json(result, json_out)
