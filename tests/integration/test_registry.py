"""The MLflow registry flow (aliases, never stages) on a real temporary sqlite MLflow store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains.base import ModelBundle
from machine_health.errors import ModelError, ModelNotFound


class ScaleBundle(ModelBundle):
    """A tiny real bundle; its class lives outside machine_health.domains on purpose."""

    domain = "vibration"

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def save_files(self, path: Path) -> None:
        (path / "factor.json").write_text(json.dumps(self.factor))

    @classmethod
    def load_files(cls, path: Path) -> ScaleBundle:
        return cls(json.loads((path / "factor.json").read_text()))

    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"y": self.factor * x} for x in inputs]

    def smoke_inputs(self) -> list[Any]:
        return [1.0]


def register(settings: Settings, factor: float) -> str:
    with registry.start_run(settings, run_name=f"scale-{factor}"):
        registry.log_metrics({"factor": factor})
        return registry.log_bundle(settings, ScaleBundle(factor)).version


def test_aliases_promote_and_rollback(settings: Settings) -> None:
    v1, v2, v3 = (register(settings, f) for f in (1.0, 2.0, 3.0))
    assert (v1, v2, v3) == ("1", "2", "3")
    assert registry.aliases(settings, "vibration") == {"challenger": "3"}

    assert registry.ensure_champion(settings, "vibration", v1) is True
    assert registry.ensure_champion(settings, "vibration", v2) is False  # only when none exists

    assert registry.promote(settings, "vibration", v2) == {"old": "1", "new": "2"}
    assert registry.aliases(settings, "vibration") == {
        "challenger": "3", "champion": "2", "previous": "1",
    }  # fmt: skip

    assert registry.rollback(settings, "vibration") == {"old": "2", "new": "1"}
    current = registry.aliases(settings, "vibration")
    assert (current["champion"], current["previous"]) == ("1", "2")

    versions = {row["version"]: row for row in registry.list_versions(settings, "vibration")}
    assert versions["1"]["aliases"] == ["champion"]
    assert versions["3"]["metrics"]["factor"] == 3.0
    assert versions["2"]["tags"]["domain"] == "vibration"


def test_unknown_alias_or_version_is_model_not_found(settings: Settings) -> None:
    with pytest.raises(ModelNotFound, match="alias @champion"):
        registry.resolve(settings, "turbofan")
    register(settings, 1.0)
    with pytest.raises(ModelNotFound, match="version 99"):
        registry.resolve(settings, "vibration", version="99")
    with pytest.raises(ModelNotFound, match="no @previous"):
        registry.rollback(settings, "vibration")


def test_a_manifest_cannot_import_code_outside_our_domains(settings: Settings) -> None:
    version = register(settings, 2.0)
    with pytest.raises(ModelError, match="is not a machine-health domain"):
        registry.load(settings, "vibration", version=version)


def test_runs_carry_the_code_version(settings: Settings) -> None:
    register(settings, 1.0)
    row = registry.list_versions(settings, "vibration")[0]
    assert row["run_id"]
    client = registry.configure(settings)
    tags = client.get_run(row["run_id"]).data.tags
    assert tags["git_commit"] != ""
    assert tags["machine_health.version"]


def test_runs_left_running_by_a_killed_try_are_ended(settings: Settings) -> None:
    client = registry.configure(settings)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment).experiment_id
    mine = {"domain": "vibration", "pipeline_run_id": "manual__2026-12-02T00:00:00+00:00'x"}
    # what a SIGKILLed step leaves: runs created and never ended
    abandoned = client.create_run(experiment, tags=mine).info.run_id
    other_run = client.create_run(experiment, tags={**mine, "pipeline_run_id": "other"})
    assert registry.end_abandoned_runs(settings, mine) == [abandoned]
    assert client.get_run(abandoned).info.status == "KILLED"
    assert client.get_run(other_run.info.run_id).info.status == "RUNNING"
    assert registry.end_abandoned_runs(settings, mine) == []  # a retry of the retry: nothing
