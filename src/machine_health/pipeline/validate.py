"""Step 2: check the snapshot (schema, NaN, ranges, label balance), or say "nothing new".

A failed check raises `ValidationFailed` naming the rule, the count and an example prediction id.
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
from machine_health.pipeline.extract import SCHEMAS, read_snapshot
from machine_health.pipeline.workspace import Workspace

logger = logging.getLogger(__name__)

STEP = "validate"
#: physical bounds (not statistics of one data set): C-MAPSS sensors are temperatures (R),
#: pressures (psia), speeds (rpm), ratios and flows, all positive and below 1e5; settings are
#: altitude/Mach/throttle codes within +-1e2.
TURBOFAN_RANGES = {"setting": (-1e2, 1e2), "sensor": (0.0, 1e5), "label": (0.0, 1e4)}
#: a class holding more than this share of the field labels is reported as imbalanced.
DOMINANT_SHARE = 0.9


def _fail(rule: str, table: pa.Table, mask: np.ndarray) -> None:
    example = table.column("prediction_id")[int(np.flatnonzero(mask)[0])].as_py()
    raise ValidationFailed(f"{rule}: {int(mask.sum())} row(s), e.g. prediction {example}")


def _check_turbofan(table: pa.Table) -> dict[str, Any]:
    for name in table.column_names:
        if name.startswith(("setting_", "sensor_")) or name in ("label", "cycle"):
            values = table.column(name).to_numpy(zero_copy_only=False).astype("float64")
            if (bad := ~np.isfinite(values)).any():
                _fail(f"{name} is missing, NaN or infinite", table, bad)
            kind = "label" if name == "label" else name.split("_")[0]
            if kind in TURBOFAN_RANGES:
                low, high = TURBOFAN_RANGES[kind]
                if (bad := (values < low) | (values > high)).any():
                    _fail(f"{name} outside [{low:g}, {high:g}]", table, bad)
            if name == "cycle" and (bad := values < 1).any():
                _fail("cycle below 1", table, bad)
    frame = table.select(["asset_id", "cycle", "label"]).to_pandas()
    # Labels come from a posted failure: cycle + RUL is the failure cycle, one per unit.
    failure = frame["cycle"] + frame["label"]
    spread = failure.groupby(frame["asset_id"]).transform(lambda s: s.max() - s.min())
    if (bad := (spread > 1e-6).to_numpy()).any():
        _fail("cycle + RUL differs inside a unit (inconsistent failure labels)", table, bad)
    duplicated = frame.duplicated(["asset_id", "cycle"]).to_numpy()
    if duplicated.any():
        _fail("a unit's cycle is archived twice", table, duplicated)
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


def _check_vibration(table: pa.Table, settings: Settings) -> dict[str, Any]:
    from machine_health.domains.vibration import workflow
    from machine_health.domains.vibration.data import load_manifest, resolve_manifest_dir

    known = {r.label for r in load_manifest(resolve_manifest_dir(settings.data_dir))}
    labels = table.column("label").to_pylist()
    if (bad := np.array([lab not in known for lab in labels])).any():
        unknown = sorted({lab for lab in labels if lab not in known}, key=str)
        _fail(f"unknown fault class {unknown} (known: {sorted(known)})", table, bad)
    rates = table.column("sample_rate").to_numpy(zero_copy_only=False)
    if (bad := ~np.isfinite(rates) | (rates <= 0)).any():
        _fail("sample_rate missing or not positive", table, bad)
    rpm = table.column("rpm").to_numpy(zero_copy_only=False)
    if (bad := np.isfinite(rpm) & ((rpm < 60) | (rpm > 30_000))).any():
        _fail("rpm outside [60, 30000]", table, bad)
    lengths = pc.binary_length(table.column("samples")).to_numpy(zero_copy_only=False)
    lengths = np.nan_to_num(lengths.astype("float64"), nan=0.0) // 4
    if (bad := lengths < settings.vibration_min_samples).any():
        _fail(f"fewer than {settings.vibration_min_samples} samples", table, bad)
    # Samples are checked in column chunks: never the whole snapshot's waveforms at once.
    offset = 0
    for chunk in table.column("samples").chunks:
        for i, blob in enumerate(chunk.to_pylist()):
            if not np.all(np.isfinite(np.frombuffer(blob, dtype="<f4"))):
                mask = np.zeros(table.num_rows, dtype=bool)
                mask[offset + i] = True
                _fail("samples hold NaN or infinite values", table, mask)
        offset += len(chunk)
    windows = int(sum(n * r / rate // workflow.WINDOW for n, r, rate in zip(
        lengths, [workflow.SAMPLE_RATE] * len(lengths), rates, strict=True)))  # fmt: skip
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    balance = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
    share = float(counts.max() / counts.sum()) if counts.size else 0.0
    if share > DOMINANT_SHARE:
        logger.warning("vibration field labels are imbalanced: %s", balance)
    return {"labels": balance, "dominant_share": round(share, 3), "model_windows": windows}


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
    table = read_snapshot(ws)
    if table.schema.names != SCHEMAS[domain].names:
        raise ValidationFailed(
            f"snapshot columns {table.schema.names} differ from the {domain} schema "
            f"{SCHEMAS[domain].names}"
        )
    if table.num_rows != extracted["rows"]:
        raise ValidationFailed(
            f"snapshot holds {table.num_rows} rows, the manifest says {extracted['rows']}"
        )
    facts = _check_turbofan(table) if domain == "turbofan" else _check_vibration(table, settings)
    consumed = lineage.consumed_until(settings, domain)
    labelled_at = table.column("labelled_at")
    if consumed is None:
        new_rows = table.num_rows
    else:
        new_rows = int(pc.sum(pc.greater(labelled_at, pa.scalar(consumed))).as_py() or 0)
    result = {
        "rows": table.num_rows,
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
