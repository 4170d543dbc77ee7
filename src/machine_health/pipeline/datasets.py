"""The data of a retraining run, per domain, built from the domains' own loaders.

- training set = the base real training data (`Settings.data_dir`) + the archived labelled rows
  of the run's snapshot, converted to what the domain's `train_bundle` takes;
- evaluation set = the real held-out test portion, frozen (the same for champion and
  challenger), minus anything the snapshot holds: the demo replays REAL test data into the API,
  so archived field data can be test data, and a model must never be scored on what it trained
  on. Excluded units/windows are counted in the gate report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from machine_health.archive.records import decode_samples
from machine_health.config import Settings

logger = logging.getLogger(__name__)

#: the C-MAPSS subset the turbofan champion is trained on (domains/turbofan: train_and_register).
TURBOFAN_BASE_SUBSET = "FD001"
_FINGERPRINT_DECIMALS = 4


@dataclass
class TrainingSet:
    """What `train_bundle` takes, plus facts for the run's params."""

    data: Any  # turbofan: (base DataFrame, extra DataFrame | None); vibration: WindowSet
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationSet:
    data: Any  # turbofan: (test DataFrame, true RUL array); vibration: WindowSet
    facts: dict[str, Any] = field(default_factory=dict)


# --- turbofan ---------------------------------------------------------------------------------
def turbofan_archive_frame(table: pa.Table) -> pd.DataFrame:
    """Snapshot rows as C-MAPSS history rows (unit = archived asset id) with the true RUL."""
    from machine_health.domains.turbofan.data import COLUMNS

    frame = table.to_pandas()
    if frame.empty:
        return pd.DataFrame(columns=[*COLUMNS, "rul"])
    frame = frame.rename(columns={"asset_id": "unit", "label": "rul"})
    frame = frame.sort_values(["unit", "cycle"], kind="stable").reset_index(drop=True)
    return frame[[*COLUMNS, "rul"]]


def turbofan_training(settings: Settings, table: pa.Table) -> TrainingSet:
    """Base FD001 training histories + archived units observed until failure.

    The domain trains on run-to-failure histories (target = last cycle - cycle). An archived unit
    whose last labelled cycle has RUL 0 is one; a unit whose series stops earlier (its failure
    posted later) is not, and is counted but kept out of training rather than given targets that
    would be wrong by its remaining life.
    """
    from machine_health.domains.turbofan.data import COLUMNS, load_subset

    base = load_subset(settings.data_dir, TURBOFAN_BASE_SUBSET).train
    archived = turbofan_archive_frame(table)
    if archived.empty:
        return TrainingSet((base, None), {"archived_units": 0, "archived_rows_used": 0})
    last = archived.groupby("unit").tail(1).set_index("unit")["rul"]
    complete = last.index[last == 0]
    extra = archived[archived["unit"].isin(complete)][COLUMNS].reset_index(drop=True)
    facts = {
        "base_subset": TURBOFAN_BASE_SUBSET,
        "base_rows": len(base),
        "archived_units": int(last.size),
        "archived_units_to_failure": len(complete),
        "archived_units_truncated": int(last.size - len(complete)),
        "archived_rows_used": len(extra),
    }
    return TrainingSet((base, extra if len(extra) else None), facts)


def _fingerprints(frame: pd.DataFrame) -> pd.Series:
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS

    values = frame[["cycle", *SETTINGS, *SENSORS]].astype("float64").round(_FINGERPRINT_DECIMALS)
    return pd.util.hash_pandas_object(values, index=False)


def turbofan_evaluation(settings: Settings, table: pa.Table) -> EvaluationSet:
    """The FD001 test units and their true RUL, without the units the snapshot holds."""
    from machine_health.domains.turbofan.data import load_subset

    data = load_subset(settings.data_dir, TURBOFAN_BASE_SUBSET)
    test = data.test
    units = np.sort(test["unit"].unique())
    archived = turbofan_archive_frame(table)
    leaked: set[int] = set()
    if not archived.empty:
        seen = set(_fingerprints(archived).tolist())
        hits = _fingerprints(test).isin(seen).to_numpy()
        leaked = {int(u) for u in test.loc[hits, "unit"].unique()}
    keep = np.array([u not in leaked for u in units])
    if not keep.any():
        from machine_health.errors import ValidationFailed

        raise ValidationFailed(
            "every turbofan test unit appears in the archive: no held-out data is left to "
            "compare champion and challenger"
        )
    test = test[test["unit"].isin(units[keep])].reset_index(drop=True)
    facts = {
        "eval_subset": TURBOFAN_BASE_SUBSET,
        "eval_units": int(keep.sum()),
        "eval_units_excluded": len(leaked),
    }
    return EvaluationSet((test, np.asarray(data.rul)[keep]), facts)


# --- vibration --------------------------------------------------------------------------------
def vibration_archive_windows(table: pa.Table, window: int, sample_rate: float) -> Any:
    """Snapshot rows cut into model windows (resampled to the model rate), one "recording" per
    archived asset with windows laid end to end in archive order (the detector's time split
    then works on field data as on a recording)."""
    from machine_health.domains.vibration.data import WindowSet, frame
    from machine_health.domains.vibration.physics import resample

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


def _concat(a: Any, b: Any) -> Any:
    from machine_health.domains.vibration.data import WindowSet

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


def vibration_training(settings: Settings, table: pa.Table) -> TrainingSet:
    """Training portion of every CWRU recording + archived windows (labelled by feedback)."""
    from machine_health.domains.vibration import workflow

    base = workflow.load_portion(settings.data_dir, "train")
    archived = vibration_archive_windows(table, workflow.WINDOW, workflow.SAMPLE_RATE)
    facts = {
        "base_windows": len(base),
        "archived_rows": table.num_rows,
        "archived_windows": len(archived),
        "hop": workflow.HOP,
    }
    return TrainingSet(_concat(base, archived), facts)


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


def vibration_evaluation(settings: Settings, table: pa.Table) -> EvaluationSet:
    """Test portion of every recording, without windows that overlap archived samples.

    An archived window at the recording's own rate is located in the recording by its samples
    snapped to a coarse grid (so a client's rounding of the values does not hide it, see
    `_locate`); every test window sharing a sample with it is excluded.
    """
    from machine_health.domains.vibration import workflow
    from machine_health.domains.vibration.data import load_manifest, resolve_manifest_dir

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
    if len(kept) == 0 or not (kept.labels == "normal").any() or not kept.is_fault.any():
        from machine_health.errors import ValidationFailed

        raise ValidationFailed(
            "the archive covers the held-out vibration windows: no normal and fault test "
            "windows are left to compare champion and challenger"
        )
    facts = {"eval_windows": len(kept), "eval_windows_excluded": int(excluded.sum())}
    return EvaluationSet(kept, facts)


def training_set(settings: Settings, domain: str, table: pa.Table) -> TrainingSet:
    return {"turbofan": turbofan_training, "vibration": vibration_training}[domain](settings, table)


def evaluation_set(settings: Settings, domain: str, table: pa.Table) -> EvaluationSet:
    return {"turbofan": turbofan_evaluation, "vibration": vibration_evaluation}[domain](
        settings, table
    )
