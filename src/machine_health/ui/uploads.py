"""Reading what a user uploads on the test-prediction page: .mat, .wav or .csv."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.io import loadmat, wavfile
from scipy.io.matlab import MatReadError

from machine_health.domains.turbofan.data import COLUMNS
from machine_health.errors import InputError

MIN_SAMPLES = 256
#: what the parsers raise on bytes that are not what the name says (loadmat: even IndexError)
UNREADABLE = (
    MatReadError, ValueError, OSError, IndexError, KeyError, TypeError, NotImplementedError,
)  # fmt: skip
#: CWRU names say their rate ("48k_Drive_End_IR007_0_109.mat"); the .mat itself does not
_CWRU_RATE = re.compile(r"(?:^|[^0-9])(12|48)k_", re.IGNORECASE)


@dataclass
class Waveforms:
    """Candidate signals of an uploaded file, with what the file says about rate and speed."""

    signals: dict[str, np.ndarray]
    sample_rate: float | None = None
    rpm: float | None = None
    notes: list[str] = field(default_factory=list)


def read_waveforms(name: str, data: bytes) -> Waveforms:
    """Signals of a .mat (every numeric array), .wav (each channel) or .csv (each column)."""
    suffix = name.lower().rsplit(".", 1)[-1]
    try:
        if suffix == "mat":
            found = _mat(data)
            if (rate := _CWRU_RATE.search(name)) is not None:
                found.sample_rate = float(rate.group(1)) * 1000
                found.notes.append(f"sample rate {rate.group(1)} kHz, from the CWRU file name")
            return found
        if suffix == "wav":
            return _wav(data)
        if suffix == "csv":
            frame = pd.read_csv(io.BytesIO(data))
            numeric = frame.select_dtypes("number")
            return Waveforms({c: numeric[c].to_numpy(float) for c in numeric.columns})
    except UNREADABLE as exc:
        raise InputError(f"{name}: cannot read it as a .{suffix} file ({exc})") from exc
    raise InputError(f"{name}: upload a .mat, .wav or .csv file")


def _mat(data: bytes) -> Waveforms:
    content = loadmat(io.BytesIO(data))
    signals: dict[str, np.ndarray] = {}
    rpm = None
    for key, value in content.items():
        if key.startswith("__") or not isinstance(value, np.ndarray):
            continue
        if not np.issubdtype(value.dtype, np.number):
            continue
        flat = np.asarray(value, dtype=float).ravel()
        if "rpm" in key.lower() and flat.size == 1:
            rpm = float(flat[0])  # CWRU files carry the shaft speed as e.g. X097RPM
        elif flat.size >= MIN_SAMPLES:
            signals[key] = flat
    # the drive-end accelerometer first: what the models were trained on
    ordered = dict(sorted(signals.items(), key=lambda kv: not kv[0].endswith("DE_time")))
    return Waveforms(ordered, rpm=rpm)


def _wav(data: bytes) -> Waveforms:
    rate, samples = wavfile.read(io.BytesIO(data))
    if np.issubdtype(samples.dtype, np.integer):  # PCM: scale to [-1, 1)
        samples = samples / float(np.iinfo(samples.dtype).max + 1)
    samples = np.asarray(samples, dtype=float)
    if samples.ndim == 1:
        return Waveforms({"channel 0": samples}, sample_rate=float(rate))
    return Waveforms({f"channel {i}": samples[:, i] for i in range(samples.shape[1])}, float(rate))


def read_cycles(data: bytes) -> pd.DataFrame:
    """C-MAPSS rows from a .csv with the columns unit, cycle, setting_1..3, sensor_1..21, or a
    C-MAPSS text file (26 space-separated columns, no header)."""
    text = data.decode("utf-8", errors="replace")
    first = text.lstrip().split("\n", 1)[0]
    try:
        if "cycle" in first:
            frame = pd.read_csv(io.StringIO(text))
        else:
            frame = pd.read_csv(io.StringIO(text), sep=r"[\s,]+", header=None, engine="python")
            frame = frame.dropna(axis=1, how="all")
            if frame.shape[1] != len(COLUMNS):
                raise InputError(
                    f"expected {len(COLUMNS)} columns per cycle, found {frame.shape[1]}"
                )
            frame.columns = COLUMNS
    except UNREADABLE as exc:
        raise InputError(f"cannot read the file as cycles ({exc})") from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"the file lacks the columns {', '.join(missing)}")
    if frame.empty:
        raise InputError("the file holds no cycle")
    try:
        return frame[COLUMNS].apply(pd.to_numeric)
    except (ValueError, TypeError) as exc:
        raise InputError(f"every column must be a number ({exc})") from exc
