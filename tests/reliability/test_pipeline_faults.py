"""Pipeline faults: a killed step retried registers ONE version; the gate refuses a broken model.

The steps run exactly as the DAG runs them locally: `machine-health pipeline <step> --domain D
--run-id R --interval-start T0 --interval-end T1` in a subprocess, retried with the SAME command
line (Airflow templates the run id and the interval, never `now()`). The workspace is the one the
earlier steps leave behind (extract, train, evaluate results; a real logged model) in a private
MLflow registry whose version 1 is the session's real vibration model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from machine_health import registry
from machine_health.config import Settings
from machine_health.errors import ModelRejected, PipelineError
from machine_health.pipeline import evaluate, lineage
from machine_health.pipeline import register as register_step
from machine_health.pipeline.workspace import Workspace
from tests.support.models import TrainedModels, register_version
from tests.support.paths import REPO
from tests.support.reliability.scenarios import registry_settings

RUN_ID = "scheduled__2026-11-21T00:00:00+00:00"
START, END = "2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00"
CLI = str(Path(sys.executable).with_name("machine-health"))


@dataclasses.dataclass
class Prepared:
    settings: Settings
    bundle: Any
    workspace: Workspace


@pytest.fixture
def prepared(tmp_path: Path, trained_models: TrainedModels) -> Prepared:
    """v1 @champion registered; the run's challenger logged (not registered) as train leaves it."""
    settings = registry_settings(tmp_path / "var")
    source = registry_settings(tmp_path / "source", trained_models.tracking_uri)
    bundle, _ = registry.load(source, "vibration", version=trained_models.vibration_version)
    register_version(
        settings, bundle, "initial-vibration", "vibration", aliases=(registry.CHAMPION,)
    )
    with registry.start_run(settings, run_name="retrain-vibration") as run:
        logged = registry.log_bundle(settings, bundle, register=False)
    ws = Workspace.open(settings, "vibration", RUN_ID, START, END)
    bundle.save(ws.file("challenger"))
    ws.record("extract", {"sha256": "0" * 64, "rows": 0})
    ws.record(
        "train",
        {"mlflow_run_id": run.info.run_id, "model_uri": logged.source,
         "bundle": str(ws.file("challenger"))},
    )  # fmt: skip
    return Prepared(settings, bundle, ws)


def _command(step: str) -> list[str]:
    return [CLI, "pipeline", step, "--domain", "vibration", "--run-id", RUN_ID,
            "--interval-start", START, "--interval-end", END]  # fmt: skip


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.as_env()}


def _run_step(settings: Settings, step: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(step), env=_env(settings), cwd=REPO, capture_output=True, text=True, timeout=300
    )


def _kill_when(settings: Settings, step: str, condition: Any, timeout_s: float = 120) -> bool:
    """Start a step and SIGKILL it as soon as `condition()` holds; True if it was still running."""
    proc = subprocess.Popen(
        _command(step), env=_env(settings), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if condition():
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return proc.returncode == -signal.SIGKILL
            time.sleep(0.02)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _run_versions(settings: Settings) -> list[str]:
    return [
        v["version"]
        for v in lineage.pipeline_versions(settings, "vibration")
        if v["tags"].get(lineage.TAG_RUN_ID) == RUN_ID
    ]


def test_killed_register_step_retried_registers_one_version(prepared: Prepared) -> None:
    settings, ws = prepared.settings, prepared.workspace
    ws.record("evaluate", {"passed": True, "champion_version": "1"})
    # attempt 1: killed one second in, before it could register anything
    started = time.monotonic()
    assert _kill_when(settings, "register", lambda: time.monotonic() - started > 1.0)
    assert _run_versions(settings) == []
    # attempt 2: killed the moment its version appears in the registry
    killed = _kill_when(settings, "register", lambda: bool(_run_versions(settings)))
    assert killed, "the register step finished before it could be killed"
    assert len(_run_versions(settings)) == 1
    # The kill may land after the result was written; remove it so that the retry has to find
    # the version in the registry (a wiped workspace, or a kill just before the write).
    ws.file("register.json").unlink(missing_ok=True)
    # attempt 3: Airflow's retry of the task, the same command line
    retried = _run_step(settings, "register")
    assert retried.returncode == 0, retried.stderr[-2000:]
    result = json.loads(retried.stdout.strip().splitlines()[-1])
    assert result["reused_version"] is True
    # attempt 4: the whole DAG run cleared and run again: a no-op
    again = _run_step(settings, "register")
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == result
    versions = _run_versions(settings)
    assert versions == [result["version"]]  # one version, not two
    assert len(registry.list_versions(settings, "vibration")) == 2  # v1 + this run's
    aliases = registry.aliases(settings, "vibration")
    assert aliases[registry.CHAMPION] == result["version"] == aliases[registry.CHALLENGER]
    assert aliases[registry.PREVIOUS] == "1"  # promoted once: previous is not the new version


def test_gate_refuses_a_challenger_that_fails_its_smoke_prediction(prepared: Prepared) -> None:
    settings, ws = prepared.settings, prepared.workspace
    broken = dataclasses.replace(prepared.bundle, threshold=float("nan"))
    target = ws.file("challenger")
    shutil.rmtree(target)
    broken.save(target)
    with pytest.raises(ModelRejected, match="smoke prediction"):
        evaluate.run(settings=settings, domain="vibration", run_id=RUN_ID,
                     interval_start=START, interval_end=END)  # fmt: skip
    # the step as the DAG runs it fails with the reason, and nothing downstream can register
    step = _run_step(settings, "evaluate")
    assert step.returncode != 0 and "smoke prediction" in step.stdout + step.stderr
    with pytest.raises(PipelineError, match="evaluate"):
        register_step.run(settings=settings, domain="vibration", run_id=RUN_ID,
                          interval_start=START, interval_end=END)  # fmt: skip
    assert ws.result("evaluate") is None and ws.result("register") is None
    assert [v["version"] for v in registry.list_versions(settings, "vibration")] == ["1"]
    assert registry.aliases(settings, "vibration")[registry.CHAMPION] == "1"
