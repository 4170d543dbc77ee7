"""Step 5: score challenger and champion on two slices with a paired bootstrap; apply the gate.

The slices (`pipeline.datasets`):
- REFERENCE: a frozen carve-out of the base TRAINING data (`Domain.reference_set`, e.g. fixed
  turbofan training units) that every training set excludes, so neither model fitted it;
- FIELD: the most recent labelled archived rows of each asset group (`Domain.field_holdout`),
  held out of this retrain's training set: the new conditions only field data can show.

For each slice and each metric it defines (`ItemScores.directions`), a paired bootstrap
(`pipeline.bootstrap`: 1000 resamples of the slice's groups, fixed seed) gives the distribution
of challenger - champion; the one-sided 95 % bounds of the challenger's LOSS (how much worse it
is, whatever the metric's direction) decide:

- reference: FAIL only when the challenger is worse by more than `gate_tolerance` x |champion|
  with 95 % confidence (the loss's lower bound exceeds the allowed loss). An interval that
  spans the tolerance passes, recorded as "inconclusive" -- also when the loss is significant
  (lower bound > 0) but not shown beyond the tolerance, which the verdict then says: a frozen,
  model-independent slice guards against regressions, it must not veto a model on noise;
- baseline: the reference slice again, the challenger against the lineage's BASELINE (the
  oldest registered version, `registry.first_version`) when the champion is a later version,
  with the same rule and tolerance. Per-promotion losses within the tolerance could otherwise
  add up, promotion after promotion; measured against the baseline the tolerance is a budget
  for the whole lineage. The reference slice is frozen, so both comparisons use the same items;
- field: FAIL only when the challenger is significantly worse (the loss's lower bound > 0, no
  tolerance: this is the data the retrain exists for); "better or equal within the noise"
  passes. Fewer than `MIN_FIELD_GROUPS` held-out groups (or a metric the slice cannot define):
  "not enough field data", recorded and not judged.

The gate passes when no judged row fails. With no champion yet, the challenger passes. A
challenger that cannot score its own smoke inputs finitely is refused outright
(`ModelRejected`). The headline test figures (`Domain.evaluation_set`) are reported beside the
decision for information only. The report is written to the workspace (`gate.json`, `gate.md`)
and logged to the challenger's MLflow run (the UI's models page shows `gate.md`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.base import EvaluationSet, ItemScores, ModelBundle, load_bundle
from machine_health.errors import ModelNotFound, ModelRejected, ValidationFailed
from machine_health.pipeline import bootstrap, datasets
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.steps import StepRun, step
from machine_health.pipeline.workspace import write_json_atomic

logger = logging.getLogger(__name__)

#: a field slice with fewer held-out groups (units, assets, clips) is not judged
MIN_FIELD_GROUPS = 5


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


def _unjudged(
    kind: str,
    name: str,
    direction: str,
    new: Any,
    old: Any,
    n_groups: int,
    passed: bool,
    verdict: str,
) -> dict[str, Any]:
    """A row the bootstrap did not decide: values only, no difference or interval."""
    return {"slice": kind, "metric": name, "better": direction, "challenger": new,
            "champion": old, "difference": None, "interval": None, "n_groups": n_groups,
            "passed": passed, "verdict": verdict}  # fmt: skip


def judge_slice(
    kind: bootstrap.SliceKind,
    challenger: ItemScores,
    champion: ItemScores | None,
    tolerance: float,
) -> list[dict[str, Any]]:
    """One row per metric of the slice: values, difference, interval, n groups, verdict."""
    new_all = challenger.metrics(challenger.columns)
    n_groups = len(set(map(str, challenger.groups)))
    if champion is None:
        return [
            _unjudged(kind, name, direction, new_all.get(name), None, n_groups, True,
                      "no champion: nothing to compare")
            for name, direction in challenger.directions.items()
        ]  # fmt: skip
    old_all = champion.metrics(champion.columns)
    if kind == "field" and n_groups < MIN_FIELD_GROUPS:
        few = f"not enough field data ({n_groups} < {MIN_FIELD_GROUPS} groups): not judged"
        return [
            _unjudged(kind, name, direction, new_all.get(name), old_all.get(name), n_groups,
                      True, few)
            for name, direction in challenger.directions.items()
        ]  # fmt: skip
    differences, n_groups = bootstrap.paired_differences(champion, challenger)
    rows = []
    for name, direction in challenger.directions.items():
        new, old = new_all.get(name), old_all.get(name)
        if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
            undefined = "not enough field data" if kind == "field" else "undefined"
            rows.append(
                _unjudged(kind, name, direction, new, old, n_groups, kind == "field",
                          f"{undefined}: the metric cannot be computed on this slice")
            )  # fmt: skip
            continue
        row = bootstrap.judge(
            kind, direction, float(old), float(new), differences[name], tolerance, n_groups
        )
        rows.append({"slice": kind, "metric": name, **row})
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Gate report: {report['domain']} run {report['run_id']}",
        "",
        f"Champion: {report['champion_version'] or 'none'}; baseline (the lineage's oldest "
        f"version): {report.get('baseline_version') or 'none'}; tolerance "
        f"{report['tolerance']:.1%} (reference and baseline rows); paired bootstrap "
        f"({bootstrap.RESAMPLES} resamples, one-sided {bootstrap.CONFIDENCE:.0%}); verdict: "
        f"**{'PASSED' if report['passed'] else 'FAILED'}**",
        "",
        f"| slice | metric | better | champion | challenger | difference "
        f"| {2 * bootstrap.CONFIDENCE - 1:.0%} interval | groups | passed | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["metrics"]:
        lines.append(
            f"| {r['slice']} | {r['metric']} | {r['better']} | {_fmt(r['champion'])} "
            f"| {_fmt(r['challenger'])} | {_fmt(r.get('difference'))} "
            f"| {_fmt(r.get('interval'))} | {r.get('n_groups', '-')} "
            f"| {'yes' if r['passed'] else 'no'} | {r['verdict']} |"
        )
    lines += ["", f"Reference slice: {report['reference']}", f"Field slice: {report['field']}"]
    headline = report.get("headline") or {}
    lines += [
        "",
        "Headline test set (information only, not part of the decision): "
        f"{headline.get('facts')}; challenger {headline.get('challenger')}; "
        f"champion {headline.get('champion')}",
        "",
    ]
    return "\n".join(lines)


def _headline(
    settings: Settings,
    domain: str,
    table: pa.Table,
    challenger: ModelBundle,
    champion: ModelBundle | None,
) -> dict[str, Any]:
    """The headline test figures, for information: never part of the decision."""
    try:
        evaluation = datasets.evaluation_set(settings, domain, table)
    except ValidationFailed as exc:
        return {"facts": {"skipped": str(exc)}, "challenger": None, "champion": None}
    spec = get_domain(domain)
    primary = spec.primary_metrics
    new = spec.score(challenger, evaluation)
    old = None if champion is None else spec.score(champion, evaluation)
    return {
        "facts": evaluation.facts,
        "challenger": {k: new.get(k) for k in primary},
        "champion": None if old is None else {k: old.get(k) for k in primary},
        "challenger_all": new,
    }


def _slice(
    domain: str,
    kind: bootstrap.SliceKind,
    data: EvaluationSet,
    challenger: ModelBundle,
    champion: ModelBundle | None,
    tolerance: float,
) -> list[dict[str, Any]]:
    of = get_domain(domain).item_scores
    return judge_slice(
        kind, of(challenger, data), None if champion is None else of(champion, data), tolerance
    )


def _baseline_rows(
    settings: Settings,
    domain: str,
    reference: EvaluationSet,
    challenger: ModelBundle,
    champion_version: str | None,
) -> tuple[str | None, list[dict[str, Any]]]:
    """(baseline version, its rows): the challenger against the lineage's oldest registered
    version on the reference slice; none when the champion is that version (already judged)."""
    baseline = registry.first_version(settings, domain) if champion_version else None
    if baseline is None or baseline == champion_version:
        return baseline, []
    bundle, _ = registry.load(settings, domain, alias=None, version=baseline)
    return baseline, _slice(
        domain, "baseline", reference, challenger, bundle, settings.gate_tolerance
    )


@step("evaluate")
def run(job: StepRun) -> dict[str, Any]:
    """Smoke-test the challenger, score both models on both slices, write and log the report."""
    settings, domain, run_id, ws = job.settings, job.domain, job.run_id, job.ws
    trained = job.inputs["train"]
    challenger = load_bundle(Path(trained["bundle"]))
    refused = smoke_test(challenger)
    if refused is not None:
        raise ModelRejected(f"{domain} challenger of run {run_id} refused: {refused}")
    try:
        champion: ModelBundle | None
        champion, ref = registry.load(settings, domain, alias=registry.CHAMPION)
        champion_version: str | None = ref.version
    except ModelNotFound:
        champion, champion_version = None, None
    table = read_snapshot(ws)
    tolerance = settings.gate_tolerance
    reference = datasets.reference_set(settings, domain)
    rows = _slice(domain, "reference", reference, challenger, champion, tolerance)
    baseline_version, baseline_rows = _baseline_rows(
        settings, domain, reference, challenger, champion_version
    )
    rows += baseline_rows
    field = datasets.field_set(settings, domain, table)
    if field is None:
        field_facts: dict[str, Any] = {"skipped": "no labelled field rows held out"}
        rows.append(
            _unjudged("field", "-", "-", None, None, 0, True,
                      "not enough field data: no labelled rows held out of this retrain")
        )  # fmt: skip
    else:
        field_facts = field.facts
        rows += _slice(domain, "field", field, challenger, champion, tolerance)
    passed = all(r["passed"] for r in rows)
    report = {
        "domain": domain,
        "run_id": run_id,
        "interval": ws.interval,
        "passed": passed,
        "tolerance": tolerance,
        "confidence": bootstrap.CONFIDENCE,
        "resamples": bootstrap.RESAMPLES,
        "champion_version": champion_version,
        "baseline_version": baseline_version,
        "metrics": rows,
        "reference": {"rule": get_domain(domain).reference_rule, **reference.facts},
        "field": field_facts,
        "headline": _headline(settings, domain, table, challenger, champion),
    }
    write_json_atomic(ws.file("gate.json"), report)
    markdown = _markdown(report)
    ws.file("gate.md").write_text(markdown)
    # eval_*: the headline figures (`models list` shows them); gate_*: the judged slices
    headline = report["headline"].get("challenger_all") or {}
    numeric = {f"eval_{k}": v for k, v in headline.items()} | {
        f"gate_{r['slice']}_{r['metric']}": r["challenger"] for r in rows
    }
    numeric = {
        k: float(v)
        for k, v in numeric.items()
        if isinstance(v, int | float) and math.isfinite(v) and not isinstance(v, bool)
    }
    with registry.resume_run(settings, trained["mlflow_run_id"]):
        registry.log_dict(report, "gate/gate.json")
        registry.log_text(markdown, "gate/gate.md")
        registry.log_metrics(numeric)
        registry.set_tags({"gate_passed": str(passed).lower()})
    return {
        "passed": passed,
        "champion_version": champion_version,
        "rows": [
            {k: r.get(k) for k in ("slice", "metric", "champion", "challenger", "passed")}
            for r in rows
        ],
        "report": str(ws.file("gate.json")),
        "reference": report["reference"],
        "field": field_facts,
    }
