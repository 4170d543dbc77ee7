"""Step 2: check the snapshot (schema, NaN, ranges, label balance), or say "nothing new".

A row that breaks a rule is quarantined, not fatal: one bad label must not fail every later
retrain of its domain. The step's result counts the quarantined rows per rule and lists the
first `QUARANTINE_LISTED` (prediction id and reason); `quarantine.json` in the run's workspace
lists them all, and the later steps read the snapshot without them (`extract.read_snapshot`).
A turbofan unit with one bad row is quarantined whole. The run fails (`ValidationFailed`) only
when the snapshot itself is wrong (columns, row count) or no valid row is left.
A snapshot with no row labelled after the data the last registered version consumed is a
"nothing new" result: not an error, and every later step of the run then does nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from machine_health.config import Settings
from machine_health.errors import ValidationFailed
from machine_health.pipeline import lineage
from machine_health.pipeline.extract import QUARANTINE_FILE, SCHEMAS, read_snapshot
from machine_health.pipeline.workspace import Workspace, write_json_atomic

logger = logging.getLogger(__name__)

STEP = "validate"
#: physical bounds (not statistics of one data set): C-MAPSS sensors are temperatures (R),
#: pressures (psia), speeds (rpm), ratios and flows, all positive and below 1e5; settings are
#: altitude/Mach/throttle codes within +-1e2.
TURBOFAN_RANGES = {"setting": (-1e2, 1e2), "sensor": (0.0, 1e5), "label": (0.0, 1e4)}
#: a class holding more than this share of the field labels is reported as imbalanced.
DOMINANT_SHARE = 0.9


#: most quarantined rows listed (id and reason) in the step's result; all are in quarantine.json
QUARANTINE_LISTED = 50

Problem = tuple[str, np.ndarray]  # (rule, boolean mask of the rows that break it)


def _turbofan_problems(table: pa.Table) -> list[Problem]:
    """Every rule a row breaks. A unit with one bad row is quarantined whole: its windows are
    built from consecutive cycles and its labels from one failure, so a partial unit misleads."""
    problems: list[Problem] = []
    for name in table.column_names:
        if name.startswith(("setting_", "sensor_")) or name in ("label", "cycle"):
            values = table.column(name).to_numpy(zero_copy_only=False).astype("float64")
            if (bad := ~np.isfinite(values)).any():
                problems.append((f"{name} is missing, NaN or infinite", bad))
            kind = "label" if name == "label" else name.split("_")[0]
            if kind in TURBOFAN_RANGES:
                low, high = TURBOFAN_RANGES[kind]
                if (bad := (values < low) | (values > high)).any():
                    problems.append((f"{name} outside [{low:g}, {high:g}]", bad))
            if name == "cycle" and (bad := values < 1).any():
                problems.append(("cycle below 1", bad))
    frame = table.select(["asset_id", "cycle", "label"]).to_pandas()
    # Labels come from a posted failure: cycle + RUL is the failure cycle, one per unit.
    failure = frame["cycle"] + frame["label"]
    spread = failure.groupby(frame["asset_id"]).transform(lambda s: s.max() - s.min())
    if (bad := (spread > 1e-6).to_numpy()).any():
        problems.append(("cycle + RUL differs inside a unit (inconsistent failure labels)", bad))
    duplicated = frame.duplicated(["asset_id", "cycle"]).to_numpy()
    if duplicated.any():
        problems.append(("a unit's cycle is archived twice", duplicated))
    units = frame["asset_id"].to_numpy()
    whole: list[Problem] = []
    for rule, mask in problems:
        unit_mask = np.isin(units, np.unique(units[mask]))
        whole.append((rule if (unit_mask == mask).all() else f"{rule} (in its unit)", unit_mask))
    return whole


def _turbofan_facts(table: pa.Table) -> dict[str, Any]:
    frame = table.select(["asset_id", "cycle", "label"]).to_pandas()
    last = frame.groupby("asset_id")["label"].min()
    return {
        "units": int(last.size),
        "units_to_failure": int((last == 0).sum()),
        "label_quantiles": {
            q: float(np.quantile(frame["label"], float(q))) for q in ("0.1", "0.5", "0.9")
        }
        if len(frame)
        else {},
    }


def _vibration_problems(table: pa.Table, settings: Settings) -> list[Problem]:
    from machine_health.domains.vibration.data import load_manifest, resolve_manifest_dir

    problems: list[Problem] = []
    known = {r.label for r in load_manifest(resolve_manifest_dir(settings.data_dir))}
    labels = table.column("label").to_pylist()
    if (bad := np.array([lab not in known for lab in labels], dtype=bool)).any():
        unknown = sorted({lab for lab in labels if lab not in known}, key=str)
        problems.append((f"unknown fault class {unknown} (known: {sorted(known)})", bad))
    rates = table.column("sample_rate").to_numpy(zero_copy_only=False).astype("float64")
    if (bad := ~np.isfinite(rates) | (rates <= 0)).any():
        problems.append(("sample_rate missing or not positive", bad))
    rpm = table.column("rpm").to_numpy(zero_copy_only=False).astype("float64")
    if (bad := np.isfinite(rpm) & ((rpm < 60) | (rpm > 30_000))).any():
        problems.append(("rpm outside [60, 30000]", bad))
    lengths = _sample_counts(table)
    if (bad := lengths < settings.vibration_min_samples).any():
        problems.append((f"fewer than {settings.vibration_min_samples} samples", bad))
    # Samples are checked in column chunks: never the whole snapshot's waveforms at once.
    non_finite = np.zeros(table.num_rows, dtype=bool)
    offset = 0
    for chunk in table.column("samples").chunks:
        for i, blob in enumerate(chunk.to_pylist()):
            if blob is not None and not np.all(np.isfinite(np.frombuffer(blob, dtype="<f4"))):
                non_finite[offset + i] = True
        offset += len(chunk)
    if non_finite.any():
        problems.append(("samples hold NaN or infinite values", non_finite))
    return problems


def _sample_counts(table: pa.Table) -> np.ndarray:
    lengths = pc.binary_length(table.column("samples")).to_numpy(zero_copy_only=False)
    return np.nan_to_num(lengths.astype("float64"), nan=0.0) // 4


def _vibration_facts(table: pa.Table) -> dict[str, Any]:
    from machine_health.domains.vibration import workflow

    lengths = _sample_counts(table)
    rates = table.column("sample_rate").to_numpy(zero_copy_only=False)
    labels = table.column("label").to_pylist()
    windows = int(sum(n * r / rate // workflow.WINDOW for n, r, rate in zip(
        lengths, [workflow.SAMPLE_RATE] * len(lengths), rates, strict=True)))  # fmt: skip
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    balance = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
    share = float(counts.max() / counts.sum()) if counts.size else 0.0
    if share > DOMINANT_SHARE:
        logger.warning("vibration field labels are imbalanced: %s", balance)
    return {"labels": balance, "dominant_share": round(share, 3), "model_windows": windows}


def quarantine(table: pa.Table, problems: list[Problem]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The mask of the rows to keep, and every quarantined row's id and reasons."""
    bad = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[int, list[str]] = {}
    for rule, mask in problems:
        bad |= mask
        for i in np.flatnonzero(mask):
            reasons.setdefault(int(i), []).append(rule)
    ids = table.column("prediction_id")
    rows = [{"prediction_id": str(ids[i].as_py()), "reason": "; ".join(reasons[i])}
            for i in sorted(reasons)]  # fmt: skip
    return ~bad, rows


def run(
    *,
    settings: Settings,
    domain: str,
    run_id: str,
    interval_start: str | datetime,
    interval_end: str | datetime,
    force: bool = False,
) -> dict[str, Any]:
    """Validate the run's snapshot; `nothing_new` when no row is newer than the last version's."""
    ws = Workspace.open(settings, domain, run_id, interval_start, interval_end)
    if not force and (done := ws.result(STEP)) is not None:
        return done
    extracted = ws.require("extract")
    table = read_snapshot(ws, validated=False)
    if table.schema.names != SCHEMAS[domain].names:
        raise ValidationFailed(
            f"snapshot columns {table.schema.names} differ from the {domain} schema "
            f"{SCHEMAS[domain].names}"
        )
    if table.num_rows != extracted["rows"]:
        raise ValidationFailed(
            f"snapshot holds {table.num_rows} rows, the manifest says {extracted['rows']}"
        )
    problems = (
        _turbofan_problems(table) if domain == "turbofan" else _vibration_problems(table, settings)
    )
    keep, quarantined = quarantine(table, problems)
    # Every quarantined id (the later steps leave them out: `extract.read_snapshot`), written
    # before the result: a retried step rewrites both.
    write_json_atomic(ws.file(QUARANTINE_FILE), {"rows": quarantined})
    by_rule = {rule: int(mask.sum()) for rule, mask in problems}
    if quarantined:
        logger.warning("%s: %d row(s) quarantined: %s", domain, len(quarantined), by_rule)
        if not keep.any():
            raise ValidationFailed(
                f"every one of the {table.num_rows} row(s) failed validation, nothing left to "
                f"train on: {by_rule}, e.g. prediction {quarantined[0]['prediction_id']}"
            )
    table = table.filter(pa.array(keep))
    facts = _turbofan_facts(table) if domain == "turbofan" else _vibration_facts(table)
    consumed = lineage.consumed_until(settings, domain)
    labelled_at = table.column("labelled_at")
    if consumed is None:
        new_rows = table.num_rows
    else:
        new_rows = int(pc.sum(pc.greater(labelled_at, pa.scalar(consumed))).as_py() or 0)
    result = {
        "rows": table.num_rows,
        "quarantined": len(quarantined),
        # the first QUARANTINE_LISTED of them (all in quarantine.json), and the count per rule
        "quarantined_rows": quarantined[:QUARANTINE_LISTED],
        "quarantine_reasons": by_rule,
        "new_rows": new_rows,
        "consumed_until": consumed.isoformat() if consumed else None,
        "nothing_new": new_rows == 0,
        **facts,
    }
    if new_rows == 0:
        result["reason"] = (
            f"no labelled {domain} prediction newer than {consumed.isoformat()} (the data of "
            "the last registered version): nothing to retrain on"
            if consumed
            else f"no labelled {domain} prediction in the archive"
        )
    return ws.record(STEP, result)
