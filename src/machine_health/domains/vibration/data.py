"""Recordings described by a `labels.csv` manifest, windowing, and the per-recording time split.

Manifest columns (the format of `cwru/labels.csv`): `file`, `label`, `rpm` (empty = unknown),
`fs_hz`, `de_key` (the `.mat` variable holding the drive-end signal; for a `.wav` an optional
channel index), `n_samples`; optional `channel` (`accelerometer` / `microphone`, default from the
file type). Other columns (fault diameter, load...) are kept as metadata.

Each recording is ONE continuous run of one machine state, so windows are split in TIME: the
first `train_fraction` of every recording is training, the rest is test, and windows are cut
inside each portion so that no test window overlaps a training one.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.io import loadmat, wavfile

from machine_health.domains.vibration.physics import resample
from machine_health.errors import DataError

logger = logging.getLogger(__name__)

MANIFEST = "labels.csv"
REQUIRED_COLUMNS = ("file", "label", "rpm", "fs_hz", "de_key", "n_samples")
NORMAL = "normal"
Portion = Literal["train", "test", "all"]


@dataclass(frozen=True)
class Recording:
    """One labelled waveform of a manifest."""

    file: str
    label: str
    signal: np.ndarray
    sample_rate: float
    rpm: float | None
    channel: str
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowSet:
    """Windows `(n, length)` at one sample rate with, per row, label, rpm, source file and start."""

    windows: np.ndarray
    labels: np.ndarray
    rpm: np.ndarray
    sources: np.ndarray
    starts: np.ndarray
    sample_rate: float

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(
            self.windows[mask],
            self.labels[mask],
            self.rpm[mask],
            self.sources[mask],
            self.starts[mask],
            self.sample_rate,
        )

    @property
    def is_fault(self) -> np.ndarray:
        return self.labels != NORMAL


def resolve_manifest_dir(path: Path) -> Path:
    """`path` itself when it holds a manifest, else its `cwru/` folder (a data root)."""
    path = Path(path)
    for candidate in (path, path / "cwru"):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise DataError(f"{path}: no {MANIFEST} here nor in {path / 'cwru'}")


def _read_mat(path: Path, key: str) -> np.ndarray:
    try:
        content = loadmat(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if key not in content:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{path}: key {key!r} not found (the file has {', '.join(keys)})")
    return np.asarray(content[key], dtype=np.float64).ravel()


def _read_wav(path: Path, channel_key: str, expected_rate: float) -> np.ndarray:
    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable WAV file ({exc})") from exc
    if not np.isclose(rate, expected_rate):
        raise DataError(f"{path}: sampled at {rate} Hz, the manifest says {expected_rate:g} Hz")
    if np.issubdtype(data.dtype, np.integer):  # PCM: scale to [-1, 1)
        data = data / float(np.iinfo(data.dtype).max + 1)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        index = int(channel_key) if channel_key.strip().isdigit() else 0
        if index >= data.shape[1]:
            raise DataError(f"{path}: channel {index} not found ({data.shape[1]} channels)")
        data = data[:, index]
    return data


def _number(value: str, column: str, where: str, *, optional: bool = False) -> float | None:
    if optional and not value.strip():
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise DataError(f"{where}: column {column!r} is not a number ({value!r})") from exc


def load_manifest(directory: Path, *, labels: Collection[str] | None = None) -> list[Recording]:
    """Read every recording a manifest directory lists (only `labels` if given), checking
    files, keys and sample counts.

    Raises `DataError` naming the manifest line or the file and what is wrong with it.
    """
    directory = Path(directory)
    manifest = directory / MANIFEST
    try:
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except OSError as exc:
        raise DataError(f"{manifest}: cannot read the manifest ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if not rows or missing:
        raise DataError(f"{manifest}: empty or missing columns {missing}")
    recordings = []
    for line, row in enumerate(rows, start=2):
        where = f"{manifest} line {line}"
        if labels is not None and row["label"].strip() not in labels:
            continue
        path = directory / row["file"]
        if not path.is_file():
            raise DataError(f"{path}: file not found (listed in {where})")
        rate = _number(row["fs_hz"], "fs_hz", where)
        expected = int(_number(row["n_samples"], "n_samples", where) or 0)
        suffix = path.suffix.lower()
        if suffix == ".mat":
            samples = _read_mat(path, row["de_key"])
        elif suffix == ".wav":
            samples = _read_wav(path, row["de_key"], rate or 0)
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r} (use .mat or .wav)")
        if len(samples) != expected:
            raise DataError(f"{path}: {len(samples)} samples, the manifest says {expected}")
        if not np.all(np.isfinite(samples)):
            raise DataError(f"{path}: the signal holds NaN or infinite values")
        channel = row.get("channel") or ("microphone" if suffix == ".wav" else "accelerometer")
        recordings.append(
            Recording(
                file=row["file"],
                label=row["label"].strip(),
                signal=samples,
                sample_rate=float(rate or 0),
                rpm=_number(row["rpm"], "rpm", where, optional=True),
                channel=channel,
                meta={k: v for k, v in row.items() if k not in REQUIRED_COLUMNS},
            )
        )
    logger.info("loaded %d recordings from %s", len(recordings), manifest)
    return recordings


def frame(samples: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `window` samples every `hop` samples (a view) and their start offsets."""
    if len(samples) < window:
        return np.empty((0, window)), np.empty(0, dtype=int)
    view = np.lib.stride_tricks.sliding_window_view(samples, window)[::hop]
    return view, np.arange(len(view)) * hop


def time_split(n_samples: int, train_fraction: float = 0.7) -> dict[str, tuple[int, int]]:
    """Sample ranges `[start, stop)` of the train (first part) and test (rest) portions."""
    boundary = int(n_samples * train_fraction)
    return {"train": (0, boundary), "test": (boundary, n_samples), "all": (0, n_samples)}


def make_windows(
    recordings: Sequence[Recording],
    *,
    portion: Portion,
    window: int,
    hop: int,
    sample_rate: float,
    train_fraction: float = 0.7,
) -> WindowSet:
    """Cut every recording's `portion` into windows at `sample_rate` (resampled if needed).

    Windows never cross the train/test boundary; `starts` are offsets in the resampled recording.
    """
    parts: list[tuple[np.ndarray, np.ndarray, Recording]] = []
    for rec in recordings:
        samples = resample(rec.signal, rec.sample_rate, sample_rate)
        start, stop = time_split(len(samples), train_fraction)[portion]
        windows, starts = frame(samples[start:stop], window, hop)
        if len(windows) == 0:
            logger.warning("%s: %s portion shorter than one window", rec.file, portion)
        parts.append((windows, starts + start, rec))
    counts = [len(w) for w, _, _ in parts]
    return WindowSet(
        windows=np.concatenate([w for w, _, _ in parts]) if parts else np.empty((0, window)),
        labels=np.repeat([r.label for _, _, r in parts], counts),
        rpm=np.repeat([np.nan if r.rpm is None else r.rpm for _, _, r in parts], counts),
        sources=np.repeat([r.file for _, _, r in parts], counts),
        starts=np.concatenate([s for _, s, _ in parts]) if parts else np.empty(0, dtype=int),
        sample_rate=sample_rate,
    )
