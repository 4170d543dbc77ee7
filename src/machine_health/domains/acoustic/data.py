"""DCASE-style machine-sound clips described by a `labels.csv` manifest, and their fixed split.

Manifest columns (the format of `acoustic/dcase2023_valve/labels.csv`): `file`, `label`
(`normal` / `anomaly`), `binary_label`, `domain` (`source` / `target`), `section`, `pattern`,
`sample_rate_hz`, `channels`, `seconds`. The clip index is the 4-digit number in the file name
(`section_00_source_test_normal_0007_pat_00.wav` -> 7).

Split (deterministic, by clip index, separately in each domain so that both domains are in every
part): a clip is WHOLE on one side, never frames of one clip on two sides.

- normal clips: index % 10 in 0-4 -> `train` (detector fit), 5-6 -> `validation` (model
  selection and the alarm threshold), 7-9 -> `test`; per domain 25 / 10 / 15 of the 50 normals.
- anomalous clips: index % 5 in 0-1 -> `validation`, 2-4 -> `test`; per domain 20 / 30.

Interleaving by index (rather than first / last blocks) spreads the recording order, and with
it any slow change of the microphone or the room, over the three parts.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.io import wavfile

from machine_health.errors import DataError

MANIFEST = "labels.csv"
DATASET = Path("acoustic") / "dcase2023_valve"
REQUIRED_COLUMNS = ("file", "label", "domain")
NORMAL, ANOMALY = "normal", "anomaly"
DOMAINS = ("source", "target")
Part = Literal["train", "validation", "test"]
PARTS: tuple[Part, ...] = ("train", "validation", "test")
_INDEX = re.compile(r"_(\d{4})(?:_|\.)")


def split_part(label: str, index: int) -> Part:
    """The part of a clip from its label and clip index (the rule in the module docstring)."""
    if label == NORMAL:
        rest = index % 10
        return "train" if rest < 5 else "validation" if rest < 7 else "test"
    return "validation" if index % 5 < 2 else "test"


@dataclass(frozen=True)
class Clip:
    """One labelled clip's manifest row (its samples are read on demand)."""

    file: str
    label: str
    domain: str
    index: int
    part: Part
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def is_anomaly(self) -> bool:
        return self.label != NORMAL


@dataclass(frozen=True)
class ClipSet:
    """Clips `(n, samples)` as float32 in [-1, 1) at one rate, with their labels and split."""

    waves: np.ndarray
    sample_rate: int
    clips: list[Clip]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def y(self) -> np.ndarray:
        """1 = anomaly, 0 = normal."""
        return np.asarray([c.is_anomaly for c in self.clips], dtype=np.int8)

    @property
    def domains(self) -> np.ndarray:
        return np.asarray([c.domain for c in self.clips])

    @property
    def parts(self) -> np.ndarray:
        return np.asarray([c.part for c in self.clips])

    def select(self, mask: np.ndarray) -> ClipSet:
        rows = np.flatnonzero(mask)
        return ClipSet(self.waves[rows], self.sample_rate, [self.clips[i] for i in rows])


def resolve_dataset_dir(path: Path) -> Path:
    """The folder holding `labels.csv`: `path` itself, or `path/acoustic/dcase2023_valve`."""
    path = Path(path)
    for candidate in (path, path / DATASET):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise DataError(f"{path}: no {MANIFEST} here nor under {DATASET}")


def read_manifest(directory: Path) -> list[Clip]:
    """Every row of `labels.csv` as a `Clip` (no audio read); DataError naming a bad row."""
    manifest = Path(directory) / MANIFEST
    try:
        with manifest.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DataError(f"{manifest}: cannot read ({exc})") from exc
    if not rows or any(c not in rows[0] for c in REQUIRED_COLUMNS):
        raise DataError(f"{manifest}: needs the columns {', '.join(REQUIRED_COLUMNS)}")
    clips = []
    for line, row in enumerate(rows, start=2):
        match = _INDEX.search(row["file"])
        if row["label"] not in (NORMAL, ANOMALY) or row["domain"] not in DOMAINS or not match:
            raise DataError(f"{manifest}:{line}: bad label, domain or file name {row['file']!r}")
        index = int(match.group(1))
        meta = {k: v for k, v in row.items() if k not in ("file", "label", "domain")}
        part = split_part(row["label"], index)
        clips.append(Clip(row["file"], row["label"], row["domain"], index, part, meta))
    return clips


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A mono 16-bit PCM WAV as float32 in [-1, 1) and its rate (DataError otherwise)."""
    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable WAV file ({exc})") from exc
    if data.dtype != np.int16 or data.ndim != 1:
        raise DataError(f"{path}: expected mono 16-bit PCM, got {data.dtype} shape {data.shape}")
    return data.astype(np.float32) / 32768.0, int(rate)


def load_clips(
    data_dir: Path,
    *,
    parts: Collection[str] = PARTS,
    labels: Collection[str] = (NORMAL, ANOMALY),
    domains: Collection[str] = DOMAINS,
    limit_per_group: int | None = None,
) -> ClipSet:
    """Read the clips of the chosen parts / labels / domains (manifest order).

    `limit_per_group`: at most this many clips per (domain, label, part), the lowest indices
    first (small real sets for tests).
    """
    directory = resolve_dataset_dir(data_dir)
    chosen: list[Clip] = []
    counts: dict[tuple[str, str, str], int] = {}
    for clip in sorted(read_manifest(directory), key=lambda c: (c.domain, c.label, c.index)):
        if clip.part not in parts or clip.label not in labels or clip.domain not in domains:
            continue
        key = (clip.domain, clip.label, clip.part)
        if limit_per_group is not None and counts.get(key, 0) >= limit_per_group:
            continue
        counts[key] = counts.get(key, 0) + 1
        chosen.append(clip)
    if not chosen:
        raise DataError(f"{directory}: no clip matches parts={parts} labels={labels}")
    waves, rates = zip(*(read_wav(directory / c.file) for c in chosen), strict=True)
    if len(set(rates)) != 1 or len({len(w) for w in waves}) != 1:
        raise DataError(f"{directory}: clips differ in rate {set(rates)} or length")
    return ClipSet(np.stack(waves), int(rates[0]), chosen)
