"""Step 5: score challenger and champion on the same frozen evaluation set; apply the gate.

The gate passes when, on EVERY primary metric of the domain (`Domain.primary_metrics`, each
with whether lower or higher is better), the challenger is not worse than the champion by more
than `gate_tolerance` (relative). With no champion yet, the challenger passes. A challenger that
cannot score its own smoke inputs finitely is refused outright (`ModelRejected`): it must never
be registered.

The report is written to the workspace (`gate.json`, `gate.md`) and logged to the challenger's
MLflow run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from machine_health import registry
from machine_health.domains import get_domain
from machine_health.domains.base import ModelBundle, load_bundle
from machine_health.errors import ModelNotFound, ModelRejected
from machine_health.pipeline import datasets
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.steps import StepRun, step
from machine_health.pipeline.workspace import write_json_atomic

logger = logging.getLogger(__name__)


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def smoke_test(bundle: ModelBundle) -> str | None:
    """None when the bundle scores its smoke inputs with finite outputs, else the reason."""
    inputs = bundle.smoke_inputs()
    if not inputs:
        return "the bundle carries no smoke inputs"
    try:
        outputs = bundle.predict(inputs)
    except Exception as exc:  # any failure of a candidate model means "refused"
        return f"smoke prediction raised {type(exc).__name__}: {exc}"
    if len(outputs) != len(inputs):
        return f"smoke prediction returned {len(outputs)} outputs for {len(inputs)} inputs"
    if not _finite(outputs):
        return "smoke prediction returned NaN or infinite values"
    return None


def score(domain: str, bundle: ModelBundle, evaluation: datasets.EvaluationSet) -> dict[str, float]:
    """The domain's metrics of `bundle` on the evaluation set (flat name -> value)."""
    return get_domain(domain).score(bundle, evaluation)


def gate(
    primary: dict[str, str],
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    tolerance: float,
) -> tuple[bool, list[dict[str, Any]]]:
    """(passed, one row per primary metric) of the challenger against the champion."""
    rows = []
    for name, direction in primary.items():
        new = challenger.get(name)
        old = None if champion is None else champion.get(name)
        if old is None:
            ok, limit = new is not None, None
        elif new is None:
            ok, limit = False, None
        elif direction == "min":
            limit = old + tolerance * abs(old)
            ok = new <= limit
        else:
            limit = old - tolerance * abs(old)
            ok = new >= limit
        rows.append(
            {"metric": name, "better": direction, "challenger": new, "champion": old,
             "limit": limit, "passed": bool(ok)}
        )  # fmt: skip
    return all(r["passed"] for r in rows), rows


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Gate report: {report['domain']} run {report['run_id']}",
        "",
        f"Champion: {report['champion_version'] or 'none'}; tolerance "
        f"{report['tolerance']:.1%}; verdict: **{'PASSED' if report['passed'] else 'FAILED'}**",
        "",
        "| metric | better | challenger | champion | limit | passed |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4g}"

    for r in report["metrics"]:
        lines.append(
            f"| {r['metric']} | {r['better']} | {fmt(r['challenger'])} | {fmt(r['champion'])} "
            f"| {fmt(r['limit'])} | {'yes' if r['passed'] else 'no'} |"
        )
    lines += ["", f"Evaluation set: {report['evaluation']}", ""]
    return "\n".join(lines)


@step("evaluate")
def run(job: StepRun) -> dict[str, Any]:
    """Smoke-test the challenger, score both models, write and log the gate report."""
    settings, domain, run_id, ws = job.settings, job.domain, job.run_id, job.ws
    trained = job.inputs["train"]
    challenger = load_bundle(Path(trained["bundle"]))
    refused = smoke_test(challenger)
    if refused is not None:
        raise ModelRejected(f"{domain} challenger of run {run_id} refused: {refused}")
    evaluation = datasets.evaluation_set(settings, domain, read_snapshot(ws))
    challenger_metrics = score(domain, challenger, evaluation)
    try:
        champion, ref = registry.load(settings, domain, alias=registry.CHAMPION)
        champion_version: str | None = ref.version
        champion_metrics: dict[str, float] | None = score(domain, champion, evaluation)
    except ModelNotFound:
        champion_version, champion_metrics = None, None
    primary = dict(get_domain(domain).primary_metrics)
    passed, rows = gate(primary, challenger_metrics, champion_metrics, settings.gate_tolerance)
    report = {
        "domain": domain,
        "run_id": run_id,
        "interval": ws.interval,
        "passed": passed,
        "tolerance": settings.gate_tolerance,
        "champion_version": champion_version,
        "metrics": rows,
        "challenger_all": challenger_metrics,
        "champion_all": champion_metrics,
        "evaluation": evaluation.facts,
    }
    write_json_atomic(ws.file("gate.json"), report)
    markdown = _markdown(report)
    ws.file("gate.md").write_text(markdown)
    with registry.resume_run(settings, trained["mlflow_run_id"]):
        registry.log_dict(report, "gate/gate.json")
        registry.log_text(markdown, "gate/gate.md")
        registry.log_metrics({f"eval_{k}": v for k, v in challenger_metrics.items()})
        registry.set_tags({"gate_passed": str(passed).lower()})
    return {
        "passed": passed,
        "champion_version": champion_version,
        "challenger": {r["metric"]: r["challenger"] for r in rows},
        "champion": {r["metric"]: r["champion"] for r in rows},
        "report": str(ws.file("gate.json")),
        **evaluation.facts,
    }
