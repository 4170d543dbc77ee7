"""`machine-health train|evaluate acoustic` (registered by `machine_health.cli`).

Light at import (the CLI imports it at start-up): the work is imported when a command runs.
The benchmark against the challenge's autoencoder is `python -m bench acoustic`.
"""

from __future__ import annotations

from typing import Any

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


def _print(title: str, metrics: dict[str, Any]) -> None:
    print_table(title, [{"metric": k, "value": v} for k, v in metrics.items()], ["metric", "value"])


def train(
    data_dir: DataDirOption = None, json_out: JsonOption = None, seed: SeedOption = 0
) -> None:
    """Fit on the normal train clips, threshold on the validation normals, register (version 1
    becomes champion when none exists)."""
    from machine_health.domains.acoustic import workflow

    settings = settings_with_data_dir(data_dir)
    result = workflow.train_and_register(settings, settings.data_dir, seed=seed)
    _print(f"{result['model']} v{result['version']} (test clips)", result["test"])
    console.print(f"champion: {'yes' if result['champion'] else 'unchanged'}")
    write_json(result, json_out)


def evaluate(
    model_uri: ModelUriOption,
    data_dir: DataDirOption = None,
    json_out: JsonOption = None,
) -> None:
    """Score a trained or registered model on the test clips."""
    from machine_health.domains.acoustic import workflow

    settings = settings_with_data_dir(data_dir)
    result = workflow.evaluate_model(settings, model_uri, settings.data_dir)
    _print(f"{model_uri} on {settings.data_dir} (test clips)", result)
    write_json(result, json_out)
