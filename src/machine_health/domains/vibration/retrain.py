"""The vibration part of the retraining pipeline's steps (called through `VibrationDomain`).

- extract: one row per archived window (samples as little-endian float32, rate, rpm, label =
  the inspected fault class from feedback);
- validate: known fault classes, positive sample rates, rpm bounds, enough finite samples;
- training set: the training portion of every CWRU recording minus its reference carve-out +
  the archived windows (minus the field holdout);
- gate slices (`reference.py`): reference = the last 1/7 of every recording's training portion,
  never fitted; field = the most recent archived windows of each asset (`Domain.field_holdout`);
- evaluation set (headline, information only): the test portion of every recording, without
  the windows overlapping archived samples (see `_locate`);
- rescale: physics features of every training window + the StandardScaler fitted on the normal
  windows of the detector's fit split (the bundle's one scaler, shared by detector and
  classifier) -> `transform.skops`, `rescaled.parquet` (scaled features, label, source);
- train: `train_bundle` on those windows, reusing the features rescale computed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from machine_health.archive.records import decode_samples
from machine_health.config import Settings
from machine_health.domains.base import (
    EvaluationSet,
    ModelBundle,
    Problem,
    TrainingSet,
    TrainResult,
)
from machine_health.domains.vibration import reference, workflow
from machine_health.domains.vibration.data import (
    NORMAL,
    WindowSet,
    frame,
    load_manifest,
    resolve_manifest_dir,
)
from machine_health.domains.vibration.features import FeatureConfig
from machine_health.domains.vibration.physics import resample
from machine_health.errors import ValidationFailed
from machine_health.pipeline.rescale import RESCALED, SEED
from machine_health.pipeline.workspace import Workspace, write_json_atomic

logger = logging.getLogger(__name__)

#: a class holding more than this share of the field labels is reported as imbalanced.
DOMINANT_SHARE = 0.9
#: physical bounds of a motor's shaft speed (as the request schema's).
MIN_RPM, MAX_RPM = 60, 30_000
FEATURES = "features.npy"  # raw physics features of the training windows, in order
TRANSFORM = "transform.skops"
#: training windows summarised in the drift reference
REFERENCE_WINDOWS = 1000


# --- extract ----------------------------------------------------------------------------------
def snapshot_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("samples", pa.binary()),  # little-endian float32, as archived
            pa.field("sample_rate", pa.float64()),
            pa.field("rpm", pa.float64()),
            pa.field("channel", pa.string()),
            pa.field("label", pa.string()),
        ]
    )


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def snapshot_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    data = doc.get("input") or {}
    samples = data.get("samples")
    return {
        "samples": bytes(samples) if samples is not None else None,
        "sample_rate": _number(data.get("sample_rate")),
        "rpm": _number(data.get("rpm")),
        "channel": str(data.get("channel") or "accelerometer"),
        "label": None if doc.get("label") is None else str(doc["label"]),
    }


# --- validate ---------------------------------------------------------------------------------
def validation_problems(table: pa.Table, settings: Settings) -> list[Problem]:
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
    if (bad := np.isfinite(rpm) & ((rpm < MIN_RPM) | (rpm > MAX_RPM))).any():
        problems.append((f"rpm outside [{MIN_RPM}, {MAX_RPM}]", bad))
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


def validation_facts(table: pa.Table) -> dict[str, Any]:
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


# --- training and evaluation sets -------------------------------------------------------------
def archive_windows(table: pa.Table, window: int, sample_rate: float) -> WindowSet:
    """Snapshot rows cut into model windows (resampled to the model rate), one "recording" per
    archived asset with windows laid end to end in archive order (the detector's time split
    then works on field data as on a recording)."""
    columns = table.to_pydict()
    windows, labels, rpm, sources, starts = [], [], [], [], []
    offsets: dict[str, int] = {}
    for samples, rate, speed, label, asset in zip(
        columns["samples"], columns["sample_rate"], columns["rpm"], columns["label"],
        columns["asset_id"], strict=True,
    ):  # fmt: skip
        at_rate = resample(decode_samples(samples), float(rate), sample_rate)
        chunks, _ = frame(at_rate, window, window)
        source = f"archive:{asset}"
        for chunk in chunks:
            windows.append(chunk)
            labels.append(label)
            rpm.append(np.nan if speed is None else float(speed))
            sources.append(source)
            starts.append(offsets.get(source, 0))
            offsets[source] = offsets.get(source, 0) + window
    return WindowSet(
        windows=np.asarray(windows, dtype=np.float64).reshape(-1, window),
        labels=np.asarray(labels, dtype=object).astype(str),
        rpm=np.asarray(rpm, dtype=np.float64),
        sources=np.asarray(sources, dtype=object).astype(str),
        starts=np.asarray(starts, dtype=np.int64),
        sample_rate=sample_rate,
    )


def _concat(a: WindowSet, b: WindowSet) -> WindowSet:
    if len(b) == 0:
        return a
    return WindowSet(
        windows=np.concatenate([a.windows, b.windows]),
        labels=np.concatenate([a.labels.astype(str), b.labels]),
        rpm=np.concatenate([a.rpm, b.rpm]),
        sources=np.concatenate([a.sources.astype(str), b.sources]),
        starts=np.concatenate([a.starts, b.starts]),
        sample_rate=a.sample_rate,
    )


def training_set(settings: Settings, table: pa.Table) -> TrainingSet:
    """Training portion of every CWRU recording + archived windows (labelled by feedback)."""
    base, _ = reference.carve(workflow.load_portion(settings.data_dir, "train"))
    archived = archive_windows(table, workflow.WINDOW, workflow.SAMPLE_RATE)
    facts = {
        "base_windows": len(base),
        "archived_rows": table.num_rows,
        "archived_windows": len(archived),
        "hop": workflow.HOP,
    }
    return TrainingSet(_concat(base, archived), facts)


def reference_set(settings: Settings) -> EvaluationSet:
    """The reference carve-out of every recording's training portion (`reference.py`)."""
    _, held = reference.carve(workflow.load_portion(settings.data_dir, "train"))
    return reference.slice_of(held, "cwru train portion")


def field_set(settings: Settings, table: pa.Table) -> EvaluationSet | None:
    """The held-out archived windows (the most recent of each asset), grouped by asset."""
    windows = archive_windows(table, workflow.WINDOW, workflow.SAMPLE_RATE)
    return reference.slice_of(windows, "archive") if len(windows) else None


#: grid (in the signal's units, g) that samples are snapped to before they are compared: coarse
#: enough that a client's rounding (6 decimals, float32) rarely moves a sample to another cell,
#: fine enough that four consecutive cells practically never repeat inside a recording.
_QUANTUM = 1e-3
#: positions of an archived window tried as its anchor in the recording: a sample whose rounding
#: crossed a cell edge spoils the anchors that contain it, not the others.
_ANCHORS = 8
#: a located window must match the recording this closely on its first samples (g).
_MATCH_ATOL = 2e-3
_MATCH_SAMPLES = 64


def _keys(values: np.ndarray) -> np.ndarray:
    """Two 64-bit keys per position: the grid cells of the 4 consecutive samples starting there."""
    cells = np.rint(np.asarray(values, dtype=np.float64) / _QUANTUM).astype(np.int64)
    bits = cells.astype(np.uint32).astype(np.uint64)  # two's complement: fits 32 bits for |g| < 2e6
    if len(bits) < 4:
        return np.empty((0, 2), dtype=np.uint64)
    first = bits[:-3] << np.uint64(32) | bits[1:-2]
    second = bits[2:-1] << np.uint64(32) | bits[3:]
    return np.stack([first, second], axis=1)


def _archived_windows(table: pa.Table, sample_rate: float) -> list[np.ndarray]:
    """The archived waveforms recorded at the recordings' own rate (others cannot be located)."""
    columns = table.select(["samples", "sample_rate"]).to_pydict()
    return [
        decode_samples(samples)
        for samples, rate in zip(columns["samples"], columns["sample_rate"], strict=True)
        if samples and np.isclose(float(rate), sample_rate)
    ]


def fitted_spans(settings: Settings, windows: WindowSet) -> dict[str, list[list[int]]]:
    """Sample spans `[start, end)` of each base recording that the ARCHIVED windows among
    `windows` (sources "archive:...") repeat, merged; {} when none is found.

    Recorded in the bundle (`info["fitted_spans"]`), so that scoring a retrained model on the
    recordings' test portion (`workflow.evaluate_model`) can leave out the windows it fitted
    through the archive, with no store at hand.
    """
    archived = windows.subset(np.char.startswith(windows.sources.astype(str), "archive:"))
    if len(archived) == 0:  # (windows resampled from another rate are never found: no loss)
        return {}
    found: dict[str, list[list[int]]] = {}
    for rec in load_manifest(resolve_manifest_dir(settings.data_dir)):
        spans = sorted(_locate(rec.signal, list(archived.windows)))
        merged: list[list[int]] = []
        for offset, n in spans:
            if merged and offset <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], offset + n)
            else:
                merged.append([offset, offset + n])
        if merged:
            found[rec.file] = merged
    return found


def _locate(signal: np.ndarray, archived: list[np.ndarray]) -> list[tuple[int, int]]:
    """(offset, length) in `signal` of every archived window found there.

    Each window is looked up by the grid keys of its first `_ANCHORS` positions; a candidate
    offset counts only if the window's first samples match the signal within `_MATCH_ATOL`, so a
    key that happens to repeat cannot exclude anything.
    """
    anchors: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for index, window in enumerate(archived):
        for j, (a, b) in enumerate(_keys(window[: _ANCHORS + 3])):
            anchors.setdefault((int(a), int(b)), []).append((index, j))
    if not anchors:
        return []
    keys = _keys(signal)
    wanted = np.array(list(anchors), dtype=np.uint64).reshape(-1, 2)
    hit = np.isin(keys[:, 0], wanted[:, 0]) & np.isin(keys[:, 1], wanted[:, 1])
    found: set[tuple[int, int]] = set()
    located: set[int] = set()  # windows already found: their other anchors need no check
    for position in np.flatnonzero(hit):
        for index, j in anchors.get((int(keys[position, 0]), int(keys[position, 1])), []):
            if index in located:
                continue
            offset, window = int(position) - j, archived[index]
            head = window[:_MATCH_SAMPLES]
            if offset < 0 or offset + len(head) > len(signal):
                continue
            if np.allclose(signal[offset : offset + len(head)], head, rtol=0, atol=_MATCH_ATOL):
                found.add((offset, len(window)))
                located.add(index)
    return sorted(found)


def evaluation_set(settings: Settings, table: pa.Table) -> EvaluationSet:
    """Test portion of every recording, without windows that overlap archived samples.

    An archived window at the recording's own rate is located in the recording by its samples
    snapped to a coarse grid (so a client's rounding of the values does not hide it, see
    `_locate`); every test window sharing a sample with it is excluded.
    """
    test = workflow.load_portion(settings.data_dir, "test")
    excluded = np.zeros(len(test), dtype=bool)
    archived = _archived_windows(table, workflow.SAMPLE_RATE) if table.num_rows else []
    if archived:
        length = test.windows.shape[1]
        for rec in load_manifest(resolve_manifest_dir(settings.data_dir)):
            rows = test.sources == rec.file
            for offset, n in _locate(rec.signal, archived):
                excluded |= rows & (test.starts < offset + n) & (test.starts + length > offset)
    kept = test.subset(~excluded)
    if len(kept) == 0 or not (kept.labels == NORMAL).any() or not kept.is_fault.any():
        raise ValidationFailed(
            "the archive covers the held-out vibration windows: no normal and fault test "
            "windows are left to compare champion and challenger"
        )
    facts = {"eval_windows": len(kept), "eval_windows_excluded": int(excluded.sum())}
    return EvaluationSet(kept, facts)


# --- rescale and train ------------------------------------------------------------------------
def feature_config(windows: WindowSet) -> FeatureConfig:
    """The FeatureConfig `train_bundle` derives from its windows (same rule, same values)."""
    speeds = windows.rpm[np.isfinite(windows.rpm)]
    return FeatureConfig(
        sample_rate=windows.sample_rate,
        window=windows.windows.shape[1],
        nominal_rpm=float(np.median(speeds)) if speeds.size else FeatureConfig.nominal_rpm,
    )


def rescale(settings: Settings, training: TrainingSet, ws: Workspace) -> dict[str, Any]:
    import skops.io
    from sklearn.preprocessing import StandardScaler

    from machine_health.domains.vibration.features import extract_features, feature_names
    from machine_health.domains.vibration.training import split_fit_calibration

    windows = training.data
    config = feature_config(windows)
    features = extract_features(windows.windows, windows.rpm, config)
    fit, _ = split_fit_calibration(windows)
    scaler = StandardScaler().fit(features[fit])
    out = pd.DataFrame(scaler.transform(features), columns=feature_names(config))
    out["label"] = windows.labels
    out["source"] = windows.sources
    out.to_parquet(ws.file(RESCALED), index=False)
    np.save(ws.file(FEATURES), features)  # the train step reuses them (same windows)
    skops.io.dump(scaler, ws.file(TRANSFORM))
    write_json_atomic(ws.file("feature_config.json"), config.as_dict())
    return {
        "transform": str(ws.file(TRANSFORM)),
        "features": features.shape[1],
        "windows": len(windows),
        "scaler_fit_windows": int(fit.sum()),
    }


def transform_gap(bundle: ModelBundle, ws: Workspace) -> float:
    from machine_health.domains.skops_types import load_skops

    scaler = load_skops(ws.file(TRANSFORM))  # only allow-listed types, even from the workspace
    inner = bundle.scaler  # type: ignore[attr-defined]
    return float(
        max(
            np.max(np.abs(scaler.mean_ - inner.mean_)), np.max(np.abs(scaler.scale_ - inner.scale_))
        )
    )


def train(settings: Settings, training: TrainingSet, ws: Workspace) -> TrainResult:
    """Train the challenger; log params, metrics, envelope spectra and the drift reference."""
    import matplotlib.pyplot as plt

    from machine_health import registry
    from machine_health.domains.vibration.monitoring import drift_reference
    from machine_health.domains.vibration.plots import envelope_figure
    from machine_health.domains.vibration.training import train_bundle
    from machine_health.monitoring.reference import log_reference

    windows = training.data
    # The rescale step computed the physics features of exactly these windows (the same
    # snapshot, decoded the same way): computing them again was half of this step's time.
    cached = ws.file(FEATURES)
    features = np.load(cached) if cached.exists() else None
    extra = {"hop": training.facts["hop"], "fitted_spans": fitted_spans(settings, windows)}
    fit = train_bundle(settings, windows, seed=SEED, extra=extra, features=features)
    bundle = fit.bundle
    registry.log_params({"threshold": round(bundle.threshold, 6), "target_fpr": bundle.target_fpr})
    registry.log_metrics({"train_seconds": fit.train_seconds, "n_calibration": fit.n_calibration})
    fig = envelope_figure(windows, bundle.config)
    registry.log_figure(fig, "plots/envelope_spectra.png")
    plt.close(fig)
    take = np.unique(np.linspace(0, len(windows) - 1, REFERENCE_WINDOWS).astype(int))
    log_reference(
        drift_reference(windows.windows[take], windows.rpm[take], bundle.config, source="pipeline")
    )
    return TrainResult(bundle, {"train_seconds": fit.train_seconds, "threshold": bundle.threshold})
