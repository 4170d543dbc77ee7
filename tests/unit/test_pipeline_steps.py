"""Pipeline building blocks without a store: the workspace's keys, the XCom file, the gate's
data (its decision rule: test_gate_bootstrap.py)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from machine_health.config import Settings
from machine_health.errors import PipelineError
from machine_health.pipeline import STEPS, emit_xcom, step_function
from machine_health.pipeline.workspace import Workspace, parse_time, safe_run_id


def test_workspace_is_keyed_by_run_and_interval(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path)
    run_id = "scheduled__2026-01-02T00:00:00+00:00"
    ws = Workspace.open(settings, "vibration", run_id, "2026-01-01T00:00:00Z", "2026-01-02")
    assert ws.path == tmp_path / "runs" / "vibration" / "scheduled__2026-01-02T00_00_00_00_00"
    assert ws.interval_end == parse_time("2026-01-02T00:00:00+00:00")
    ws.record("extract", {"rows": 3})
    again = Workspace.open(settings, "vibration", run_id, "2026-01-01T00:00:00Z", "2026-01-02")
    assert again.result("extract")["rows"] == 3
    with pytest.raises(PipelineError, match="names one interval"):
        Workspace.open(settings, "vibration", run_id, "2026-01-01", "2026-01-03")
    with pytest.raises(PipelineError, match="has not completed"):
        again.require("train")
    with pytest.raises(PipelineError, match="before its start"):
        Workspace.open(settings, "vibration", "other", "2026-01-02", "2026-01-01")
    with pytest.raises(PipelineError):
        safe_run_id(":::")


def test_later_steps_refuse_to_run_before_their_inputs(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path)
    keys = {"settings": settings, "domain": "turbofan", "run_id": "r1",
            "interval_start": "2026-01-01", "interval_end": "2026-01-02"}  # fmt: skip
    for step in ("rescale", "train", "evaluate", "register", "reload"):
        with pytest.raises(PipelineError, match="has not completed"):
            step_function(step)(**keys)
    with pytest.raises(KeyError):
        step_function("deploy")


def test_every_declared_step_is_bound_to_its_body() -> None:
    """Each step module's `run` is the runner of its own declaration, and every step it reads
    comes before it."""
    names = list(STEPS)
    for name, declared in STEPS.items():
        assert step_function(name).step is declared
        assert all(names.index(r) < names.index(name) for r in declared.requires), name


def test_the_dags_list_the_declared_steps() -> None:
    """The DAG files copy the step names (they import no product code): the copy must match."""
    path = Path(__file__).resolve().parents[2] / "airflow" / "dags" / "step_names.py"
    tree = ast.parse(path.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    (assigned,) = [n for n in tree.body if isinstance(n, ast.Assign)]
    assert ast.unparse(assigned.targets[0]) == "STEPS"
    assert ast.literal_eval(assigned.value) == tuple(STEPS)


def test_the_cli_has_one_command_per_declared_step() -> None:
    from machine_health.cli import pipeline_app

    commands = {c.name for c in pipeline_app.registered_commands}
    assert commands == {*STEPS, "run-all"}


def test_a_step_refuses_to_run_without_its_secrets(tmp_path: Path) -> None:
    """Declared secrets are checked before the body runs (reload: the service token)."""
    from machine_health.errors import ConfigurationError

    settings = Settings(_env_file=None, var_dir=tmp_path, env="prod")
    keys = {"settings": settings, "domain": "turbofan", "run_id": "r1",
            "interval_start": "2026-01-01", "interval_end": "2026-01-02"}  # fmt: skip
    Workspace.open(settings, "turbofan", "r1", "2026-01-01", "2026-01-02").record(
        "register", {"promoted": False}
    )
    with pytest.raises(ConfigurationError, match="MH_SERVICE_TOKEN"):
        step_function("reload")(**keys)


def test_emit_xcom_writes_return_json_only_inside_a_pod(tmp_path: Path) -> None:
    assert emit_xcom({"a": 1}, str(tmp_path / "absent")) is False
    assert emit_xcom({"version": "3"}, str(tmp_path)) is True
    assert json.loads((tmp_path / "return.json").read_text()) == {"version": "3"}


def test_extract_reads_label_times_stored_as_text_by_earlier_versions() -> None:
    from datetime import UTC, datetime

    from machine_health.pipeline.extract import _timestamp

    expected = datetime(2026, 12, 1, 21, 43, 39, 722000, tzinfo=UTC)
    assert _timestamp("2026-12-01 21:43:39.722000") == expected
    assert _timestamp(expected.replace(tzinfo=None)) == expected
    assert _timestamp(expected) is expected
    assert _timestamp("yesterday") is None and _timestamp(None) is None


@pytest.mark.parametrize("decimals", [None, 6, 4])
def test_gate_evaluation_leaves_out_the_archived_test_windows(
    data_dir: Path, decimals: int | None
) -> None:
    """Archived test windows (as a client sent them: full precision or rounded) are found in
    the recordings, and no held-out window that shares a sample with them is scored."""
    import numpy as np
    import pyarrow as pa

    from machine_health.archive.records import encode_samples
    from machine_health.domains.vibration import workflow
    from machine_health.domains.vibration.retrain import evaluation_set as vibration_evaluation

    settings = Settings(_env_file=None, data_dir=data_dir)
    test = workflow.load_portion(data_dir, "test")
    chosen = np.arange(0, len(test), max(1, len(test) // 25))  # spread over every recording
    sent = [w if decimals is None else np.round(w, decimals) for w in test.windows[chosen]]
    noise = np.random.default_rng(0).normal(0, 0.1, test.windows.shape[1])  # found nowhere
    table = pa.table({
        "samples": [encode_samples(w) for w in [*sent, noise]],
        "sample_rate": [workflow.SAMPLE_RATE] * (len(sent) + 1),
    })  # fmt: skip
    evaluation = vibration_evaluation(settings, table)
    kept_keys = set(zip(evaluation.data.sources, evaluation.data.starts, strict=True))
    length = test.windows.shape[1]
    for i in chosen:
        source, start = test.sources[i], test.starts[i]
        assert (source, start) not in kept_keys
        # nor any window overlapping it
        assert not any(s == source and abs(st - start) < length for s, st in kept_keys)
    assert evaluation.facts["eval_windows_excluded"] >= len(chosen)
    assert evaluation.facts["eval_windows"] + evaluation.facts["eval_windows_excluded"] == len(test)
    alone = pa.table({"samples": [encode_samples(noise)], "sample_rate": [workflow.SAMPLE_RATE]})
    nothing = vibration_evaluation(settings, alone)
    assert nothing.facts["eval_windows_excluded"] == 0
