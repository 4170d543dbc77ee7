"""Every retraining step declared once, and the preamble they all share.

A step is declared here (`STEPS`: its name, what it reads, what it needs) and its body lives in
`machine_health.pipeline.<name>`, bound to the declaration by `@step("<name>")`. The runner
made by `@step` does for every step what each one used to repeat: open the run's workspace,
return the recorded result of a retried step, do nothing after validate said "nothing new",
read the results of the steps it requires, check the secrets it uses, and record what the body
returns. The declarations are plain data so that the CLI builds a command per step without
importing the bodies (they load MLflow, Arrow, the domains' frameworks).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from machine_health.config import Settings
from machine_health.pipeline.workspace import Workspace

#: what a step returns: its recorded result (a small JSON-able dict)
Result = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """What a step is, without its body."""

    name: str
    #: one line for `machine-health pipeline <name> --help`
    summary: str
    #: earlier steps whose results the body reads (PipelineError while one has not completed)
    requires: tuple[str, ...] = ()
    #: secret settings the body uses (`Settings.require_secrets`): refused before it runs
    secrets: tuple[str, ...] = ()
    #: a retry returns the recorded result (False: every run does the work again)
    reuses_result: bool = True
    #: after validate said "nothing new" the step records a skip instead of running
    skips_nothing_new: bool = True

    @property
    def module(self) -> str:
        return f"{__package__}.{self.name}"

    def function(self) -> Callable[..., Result]:
        """The step's runner (imports its module: the heavy part)."""
        return importlib.import_module(self.module).run


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("check", "Decide whether the run retrains (new labels, drift, live performance).",
             skips_nothing_new=False),
        Step("extract", "Snapshot the labelled archived predictions to Parquet.",
             skips_nothing_new=False),
        Step("validate", "Check the snapshot and quarantine bad rows, or say nothing is new.",
             requires=("extract",), skips_nothing_new=False),
        Step("rescale", "Fit the feature transform and write the rescaled training set.",
             requires=("validate",)),
        Step("train", "Train the challenger and log it to MLflow (not registered).",
             requires=("extract", "rescale")),
        Step("evaluate", "Score both models on the reference and field slices; apply the gate.",
             requires=("train",)),
        Step("register", "Register the challenger; promote it when the gate passed.",
             requires=("extract", "train", "evaluate")),
        # Never served from its recorded result: a replica that restarted since must still be
        # shown to serve the champion.
        Step("reload", "Make every serving replica serve the new champion.",
             requires=("register",), secrets=("service_token",), reuses_result=False),
    )
}  # fmt: skip


@dataclass(frozen=True)
class StepRun:
    """What a step's body works with: the run's workspace and its required results."""

    step: Step
    settings: Settings
    ws: Workspace
    #: the recorded results of `step.requires`, by step name
    inputs: dict[str, Result]
    force: bool

    @property
    def domain(self) -> str:
        return self.ws.domain

    @property
    def run_id(self) -> str:
        return self.ws.run_id


def step(name: str) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Bind a body `(StepRun, **options) -> result` to the declared step `name`; the runner
    keeps every step's keyword interface `run(*, settings, domain, run_id, interval_start,
    interval_end, force=False, **options)` (options: the body's own keywords)."""
    declared = STEPS[name]

    def bind(body: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(body)
        def run(
            *,
            settings: Settings,
            domain: str,
            run_id: str,
            interval_start: str | datetime,
            interval_end: str | datetime,
            force: bool = False,
            **options: Any,
        ) -> Result:
            ws = Workspace.open(settings, domain, run_id, interval_start, interval_end)
            if declared.reuses_result and not force and (done := ws.result(name)) is not None:
                return done
            if declared.skips_nothing_new and (nothing := ws.short_circuited()) is not None:
                return ws.skipped(name, nothing)
            inputs = {required: ws.require(required) for required in declared.requires}
            settings.require_secrets(*declared.secrets)
            job = StepRun(declared, settings, ws, inputs, force)
            return ws.record(name, body(job, **options))

        run.step = declared  # type: ignore[attr-defined] (lets a test check the binding)
        return run

    return bind
