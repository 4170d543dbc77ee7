"""`machine-health benchmark|train turbofan` (registered by `machine_health.cli`).

Light at import (the CLI imports it at start-up): the work is imported when a command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from machine_health.cli_support import (
    DataDirOption,
    JsonOption,
    SeedOption,
    console,
    print_table,
    settings_with_data_dir,
    write_json,
)

SubsetOption = Annotated[str, typer.Option("--subset", help="C-MAPSS subset FD001..FD004.")]
COLUMNS = ["name", "rmse", "rmse_std", "phm_score", "mae", "r2", "train_seconds",
           "predict_ms_per_unit", "seeds"]  # fmt: skip


def benchmark(
    data_dir: DataDirOption = None,
    subset: SubsetOption = "FD001",
    models: Annotated[
        str,
        typer.Option(
            "--models", help="Comma-separated: hgb,mlp,cnn,lstm,cnn_gru,cnn_ensemble,ensemble."
        ),
    ] = "hgb,mlp,cnn,lstm,cnn_gru,cnn_ensemble,ensemble",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per model.")] = 3,
    json_out: JsonOption = None,
) -> None:
    """Train and score every model (last cycle of each test unit), one MLflow run per seed."""
    from machine_health.domains.turbofan.workflow import benchmark as run_benchmark

    settings = settings_with_data_dir(data_dir)
    names = [m.strip() for m in models.split(",") if m.strip()]
    result = run_benchmark(settings, subset=subset, models=names, seeds=seeds)
    title = f"turbofan {subset}: mean over {seeds} seed(s)"
    print_table(title, result["models"], COLUMNS)
    console.print(f"best: {result['best']}")
    write_json(result, json_out)


def train(
    data_dir: DataDirOption = None,
    subset: SubsetOption = "FD001",
    model: Annotated[str, typer.Option("--model", help="Model name (see benchmark).")] = "ensemble",
    seed: SeedOption = 0,
    json_out: JsonOption = None,
) -> None:
    """Train on the training file, score the test file, register (v1 becomes champion)."""
    from machine_health.domains.turbofan.workflow import train_and_register

    settings = settings_with_data_dir(data_dir)
    result = train_and_register(settings, subset=subset, model_name=model, seed=seed)
    result["name"] = f"{result['model']} v{result['version']}"
    print_table(f"turbofan {subset} (test file)", [result], COLUMNS[:-1])
    console.print(f"champion: {'yes' if result['champion'] else 'unchanged'}")
    write_json(result, json_out)
