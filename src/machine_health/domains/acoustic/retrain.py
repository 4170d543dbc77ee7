"""The acoustic part of the retraining pipeline's steps (called through `AcousticDomain`).

- extract: one row per archived clip: its archived log-mel (32 bands, float16 bytes), shape,
  the sha256 of the posted audio, and `label` (`normal` / `anomaly`, from feedback);
- validate: known labels, a decodable spectrogram of the archived shape (32 bands, as many
  frames as a 5-12 s clip gives), finite levels within what a 16-bit clip can reach;
- training set: the base `train` + `validation` clips + the archived clips. Archived clips
  labelled NORMAL are fitted with the normal `train` clips (the detector learns normal operation
  only); archived clips labelled ANOMALY are never fitted: they check the new threshold (the
  share of them it flags is logged as `archive_anomaly_recall`). Archived clips that are base
  clips posted again are dropped (they would count twice);
- gate slices (`reference.py`): reference = the `validation` clips (no model's scores on them
  were fitted); field = the most recent archived clips of each asset (`Domain.field_holdout`),
  held out of the training set;
- evaluation set (headline, information only): the `test` clips minus every clip the archive
  holds (the demo replays test clips), found by the sha256 of the posted audio or by its
  archived spectrogram;
- rescale: the detector's one fitted transform is the standardisation of the clip statistics
  (mean, scale of the fitted normal clips) -> `transform.npz`, `rescaled.parquet`;
- train: `train_bundle` with the archived normal clips; logs params, metrics, the score
  histogram and the drift reference in the active MLflow run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from machine_health.config import Settings
from machine_health.domains.acoustic.audio import MAX_SECONDS, MIN_SECONDS
from machine_health.domains.acoustic.data import (
    ANOMALY,
    DOMAINS,
    NORMAL,
    load_clips,
    resolve_dataset_dir,
)
from machine_health.domains.acoustic.domain import ARCHIVE_BANDS
from machine_health.domains.acoustic.domain import evaluation_set as base_evaluation_set
from machine_health.domains.acoustic.domain import training_set as base_training_set
from machine_health.domains.acoustic.features import FeatureConfig, clip_stats
from machine_health.domains.acoustic.monitoring import archive_resolution
from machine_health.domains.acoustic.training import Prepared, prepare
from machine_health.domains.base import (
    EvaluationSet,
    ModelBundle,
    Problem,
    TrainingSet,
    TrainResult,
    Workspace,
)
from machine_health.errors import ValidationFailed

logger = logging.getLogger(__name__)

LABELS = (NORMAL, ANOMALY)
TRANSFORM = "transform.npz"
RESCALED = "rescaled.parquet"
#: an archived spectrogram matches a data-set clip when no level differs by more than this (dB):
#: the same clip differs only by float16 rounding (~0.03 dB at 50 dB), two clips by many dB.
MATCH_DB = 0.1
#: a log-mel level is 10 log10(power + 1e-10): at least -100 dB, and a full-scale 16-bit clip
#: stays far below 120 dB; anything outside is a corrupt record, not a sound.
MIN_DB, MAX_DB = -100.5, 120.0


def frame_bounds(config: FeatureConfig | None = None) -> tuple[int, int]:
    """(min, max) spectrogram frames of an accepted clip (5-12 s at the model's rate)."""
    config = config or FeatureConfig()

    def frames(seconds: float) -> int:
        return (int(seconds * config.sample_rate) - config.n_fft) // config.hop + 1

    return frames(MIN_SECONDS), frames(MAX_SECONDS)


# --- extract ----------------------------------------------------------------------------------
def snapshot_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("sha256", pa.string()),
            pa.field("log_mel", pa.binary()),  # little-endian float16, (frames, bands), as archived
            pa.field("log_mel_frames", pa.int64()),
            pa.field("log_mel_bands", pa.int64()),
            pa.field("label", pa.string()),
        ]
    )


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def snapshot_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    data = doc.get("input") or {}
    try:
        raw: bytes | None = base64.b64decode(str(data["log_mel_f16_base64"]), validate=True)
    except (KeyError, binascii.Error, ValueError):
        raw = None  # kept visible: validate reports the row
    return {
        "sha256": None if data.get("sha256") is None else str(data["sha256"]),
        "log_mel": raw,
        "log_mel_frames": _integer(data.get("log_mel_frames")),
        "log_mel_bands": _integer(data.get("log_mel_bands")),
        "label": None if doc.get("label") is None else str(doc["label"]),
    }


def spectra_of(table: pa.Table) -> list[np.ndarray | None]:
    """Each row's archived spectrogram `(frames, bands)` as float32 (None: not decodable)."""
    columns = table.select(["log_mel", "log_mel_frames", "log_mel_bands"]).to_pydict()
    out: list[np.ndarray | None] = []
    for raw, frames, bands in zip(
        columns["log_mel"], columns["log_mel_frames"], columns["log_mel_bands"], strict=True
    ):
        if raw is None or not frames or not bands or len(raw) != 2 * frames * bands:
            out.append(None)
            continue
        out.append(np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(frames, bands))
    return out


# --- validate ---------------------------------------------------------------------------------
def validation_problems(table: pa.Table, settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    labels = table.column("label").to_pylist()
    if (bad := np.array([lab not in LABELS for lab in labels], dtype=bool)).any():
        unknown = sorted({str(lab) for lab in labels if lab not in LABELS})
        problems.append((f"unknown label {unknown} (known: {list(LABELS)})", bad))
    low, high = frame_bounds()
    bands = np.array([b or 0 for b in table.column("log_mel_bands").to_pylist()])
    frames = np.array([f or 0 for f in table.column("log_mel_frames").to_pylist()])
    shape = (bands != ARCHIVE_BANDS) | (frames < low) | (frames > high)
    if shape.any():
        problems.append(
            (f"spectrogram shape not ({low}..{high} frames, {ARCHIVE_BANDS} bands)", shape)
        )
    spectra = spectra_of(table)
    if (bad := np.array([s is None for s in spectra], dtype=bool) & ~shape).any():
        problems.append(("spectrogram missing or its bytes do not match its shape", bad))
    non_finite = np.array([s is not None and not np.all(np.isfinite(s)) for s in spectra])
    if non_finite.any():
        problems.append(("spectrogram holds NaN or infinite levels", non_finite))
    levels = np.array(
        [
            s is not None and np.all(np.isfinite(s)) and (s.min() < MIN_DB or s.max() > MAX_DB)
            for s in spectra
        ],
        dtype=bool,
    )
    if levels.any():
        problems.append((f"spectrogram levels outside [{MIN_DB}, {MAX_DB}] dB", levels))
    return problems


def validation_facts(table: pa.Table) -> dict[str, Any]:
    labels = [str(lab) for lab in table.column("label").to_pylist()]
    balance = {lab: labels.count(lab) for lab in sorted(set(labels))}
    frames = [f for f in table.column("log_mel_frames").to_pylist() if f]
    return {
        "labels": balance,
        "normal_clips": balance.get(NORMAL, 0),
        "anomalous_clips": balance.get(ANOMALY, 0),
        "median_frames": float(np.median(frames)) if frames else 0.0,
    }


# --- training and evaluation sets -------------------------------------------------------------
@dataclass(frozen=True)
class AcousticTraining:
    """The base clips (`train` + `validation` parts) and the usable archived clips."""

    base: Prepared
    #: archived `(frames, 32)` spectrograms and their labels (duplicates of base clips dropped)
    archived: list[np.ndarray]
    labels: np.ndarray

    def archived_stats(self, config: FeatureConfig, label: str) -> np.ndarray:
        """Clip statistics (with `config`) of the archived clips labelled `label`."""
        rows = [s for s, lab in zip(self.archived, self.labels, strict=True) if lab == label]
        if not rows:
            return np.zeros((0, len(config.stats) * config.stat_bands))
        return np.concatenate([clip_stats(s[None], config) for s in rows])


def clip_hashes(data_dir: Path, prepared: Prepared) -> list[str]:
    """sha256 of each clip's audio as a client posts it (base64 of the WAV file as it is): the
    `sha256` the archive keeps for a posted clip."""
    directory = resolve_dataset_dir(data_dir)
    return [
        hashlib.sha256(base64.b64encode((directory / c.file).read_bytes())).hexdigest()
        for c in prepared.clips.clips
    ]


def _near_any(stack: np.ndarray, spectrum: np.ndarray) -> bool:
    """Whether `spectrum` is within `MATCH_DB` of one of the spectrograms of `stack` (the same
    clip: they differ by float16 rounding only)."""
    return bool((np.abs(stack - spectrum).max(axis=(1, 2)) <= MATCH_DB).any())


def archived_matches(
    prepared: Prepared, hashes: list[str], table: pa.Table, spectra: list[np.ndarray | None]
) -> np.ndarray:
    """Mask of the prepared clips the snapshot holds: the same posted audio (sha256), or the
    same archived spectrogram within `MATCH_DB` (a client that re-encoded the file)."""
    held = set(table.column("sha256").to_pylist()) if table.num_rows else set()
    found = np.array([h in held for h in hashes], dtype=bool)
    archived = [s for s in spectra if s is not None and s.shape[0] == prepared.spectra.shape[1]]
    if archived:
        stack = np.stack(archived)
        for i, clip in enumerate(archive_resolution(prepared.spectra)):
            if not found[i]:
                found[i] = _near_any(stack, clip)
    return found


def subset(prepared: Prepared, mask: np.ndarray) -> Prepared:
    return Prepared(prepared.clips.select(mask), prepared.spectra[mask])


def training_set(settings: Settings, table: pa.Table) -> TrainingSet:
    """Base `train` + `validation` clips + archived clips (see the module docstring)."""
    base = base_training_set(settings.data_dir)
    spectra = spectra_of(table)
    labels = np.asarray(table.column("label").to_pylist(), dtype=object).astype(str)
    # A base clip posted and labelled again would be fitted twice: find it in the snapshot.
    duplicate = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows:
        hashes = set(clip_hashes(settings.data_dir, base))
        compact = archive_resolution(base.spectra)
        for j, (digest, spectrum) in enumerate(
            zip(table.column("sha256").to_pylist(), spectra, strict=True)
        ):
            same_shape = spectrum is not None and spectrum.shape == compact.shape[1:]
            duplicate[j] = digest in hashes or (same_shape and _near_any(compact, spectrum))
    keep = [j for j in range(table.num_rows) if not duplicate[j] and spectra[j] is not None]
    training = AcousticTraining(base, [spectra[j] for j in keep], labels[keep])  # type: ignore[misc]
    facts = {
        "base_clips": len(base.clips),
        "base_normal_train": int(base.part("train", NORMAL).sum()),
        "archived_rows": table.num_rows,
        "archived_normal_fitted": int((training.labels == NORMAL).sum()),
        "archived_anomalies_checked": int((training.labels == ANOMALY).sum()),
        "archived_duplicates_dropped": int(duplicate.sum()),
    }
    return TrainingSet(training, facts)


def evaluation_set(settings: Settings, table: pa.Table) -> EvaluationSet:
    """The `test` clips the archive does not hold; both labels must be left in each domain
    (source and target), or the gate's AUCs cannot be computed."""
    test = base_evaluation_set(settings.data_dir)
    excluded = archived_matches(
        test, clip_hashes(settings.data_dir, test), table, spectra_of(table)
    )
    kept = subset(test, ~excluded)
    for domain in DOMAINS:
        labels = {c.label for c in kept.clips.clips if c.domain == domain}
        if labels != {NORMAL, ANOMALY}:
            raise ValidationFailed(
                f"the archive covers the held-out acoustic test clips of the {domain} domain: "
                "no normal and anomalous clips are left to compare champion and challenger"
            )
    facts = {"eval_clips": len(kept.clips), "eval_clips_excluded": int(excluded.sum())}
    return EvaluationSet(kept, facts)


def reference_set(settings: Settings) -> EvaluationSet:
    """The `validation` clips, with their labels and source/target domains (`reference.py`);
    only they are read (not the `train` clips `training_set` reads with them)."""
    held = prepare(load_clips(settings.data_dir, parts=("validation",)))
    data = {"spectra": held.spectra, "y": held.clips.y, "domain": held.clips.domains}
    return EvaluationSet(data, {"source": "validation clips", "clips": len(held.clips)})


def field_set(settings: Settings, table: pa.Table) -> EvaluationSet | None:
    """The held-out archived clips (decodable, labelled) as archived spectrograms."""
    spectra = spectra_of(table)
    labels = table.column("label").to_pylist()
    keep = [j for j, s in enumerate(spectra) if s is not None and labels[j] in LABELS]
    if not keep:
        return None
    y = np.array([labels[j] == ANOMALY for j in keep], dtype=np.int8)
    data = {"spectra": [spectra[j] for j in keep], "y": y, "domain": None}
    return EvaluationSet(data, {"source": "archive", "clips": len(keep)})


# --- rescale and train ------------------------------------------------------------------------
def _fit_rows(training: AcousticTraining, config: FeatureConfig) -> np.ndarray:
    from machine_health.domains.acoustic.training import fit_rows

    return fit_rows(training.base, config, training.archived_stats(config, NORMAL))


def rescale(settings: Settings, training: TrainingSet, ws: Workspace) -> dict[str, Any]:
    """The standardisation `fit_detector` fits on the normal clips, written as the bundle will
    carry it (`Detector.mean`, `Detector.scale`)."""
    from machine_health.domains.acoustic.features import stat_names
    from machine_health.domains.acoustic.model import fit_detector

    data: AcousticTraining = training.data
    config = FeatureConfig()
    rows = _fit_rows(data, config)
    fitted = fit_detector(rows)
    np.savez(ws.file(TRANSFORM), mean=fitted.mean, scale=fitted.scale)
    out = pd.DataFrame((rows - fitted.mean) / fitted.scale, columns=stat_names(config))
    n_base = int(data.base.part("train", NORMAL).sum())
    out["source"] = ["base"] * n_base + ["archive"] * (len(rows) - n_base)
    out.to_parquet(ws.file(RESCALED), index=False)
    return {"transform": str(ws.file(TRANSFORM)), "features": rows.shape[1], "fit_clips": len(rows)}


def transform_gap(bundle: ModelBundle, ws: Workspace) -> float:
    detector = bundle.detector  # type: ignore[attr-defined]
    with np.load(ws.file(TRANSFORM), allow_pickle=False) as fitted:
        mean, scale = fitted["mean"], fitted["scale"]
    if mean.shape != detector.mean.shape or scale.shape != detector.scale.shape:
        return float("inf")
    return float(max(np.max(np.abs(mean - detector.mean)), np.max(np.abs(scale - detector.scale))))


def train(settings: Settings, training: TrainingSet, ws: Workspace) -> TrainResult:
    """Train the challenger; log params, metrics, the score histogram and the drift reference."""
    from machine_health.domains.acoustic.monitoring import training_reference
    from machine_health.domains.acoustic.training import train_bundle
    from machine_health.domains.acoustic.workflow import log_training
    from machine_health.monitoring.reference import log_reference
    from machine_health.pipeline.rescale import SEED

    data: AcousticTraining = training.data
    config = FeatureConfig()
    bundle, result = train_bundle(
        data.base, seed=SEED, config=config, extra_normal=data.archived_stats(config, NORMAL)
    )
    extra = {"calibration_fpr": result.calibration_fpr}
    anomalies = data.archived_stats(config, ANOMALY)
    if len(anomalies):  # checked, never fitted: does the new threshold flag them?
        extra["archive_anomaly_recall"] = float(
            np.mean(bundle.detector.score(anomalies) > bundle.threshold)
        )
    metrics = log_training(
        bundle, result, data.base, params={"threshold": round(result.threshold, 6)},
        metrics=extra,
    )  # fmt: skip
    log_reference(training_reference(data.base, data.archived, source="pipeline"))
    return TrainResult(bundle, metrics)
