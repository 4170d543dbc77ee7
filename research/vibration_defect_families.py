"""Which defect family does each CWRU recording's envelope spectrum actually show?

    .venv/bin/python -m research.vibration_defect_families [--json]

The leave-one-size-out question of issue 26 (`research.vibration_generalisation`) asks a
classifier trained on one fault size to name the fault TYPE of the other. Physics says the type
is in the envelope spectrum: a localised defect on the outer race, the inner race or a ball
strikes at BPFO, BPFI or 2 x BSF (orders of the shaft rate, set by the bearing geometry alone).
This study asks the data directly, with no learning and no band choice: for every recording and
both accelerometers (drive end, fan end), cepstral pre-whitening (the spectrum's magnitude set to
one, phase kept: the benchmark method of Randall & Antoni for the CWRU data, which needs no
resonance band), squared envelope, its spectrum on an order axis, and the height of each defect
family (harmonics 1-3, each relative to the median level of orders 0.5-20) per window. The rule
"the type whose family stands highest" is scored per recording.

If a recording's own family does not stand highest, no classifier that reads the defect physics
can name its type, and a size-independent classifier cannot exceed what that leaves.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import scipy.io
from scipy import signal

from machine_health.config import get_settings
from machine_health.domains.vibration.physics import SKF_6205

FAMILIES = {"ball": "2bsf", "inner_race": "bpfi", "outer_race": "bpfo"}
HARMONICS = 3
WINDOWS = (2048, 8192)  # the served window, and 4x its order resolution
CHANNELS = ("de_key", "fe_key")
_EPS = 1e-12


def family_orders() -> dict[str, float]:
    """Defect orders of the drive-end bearing (Hz at 1 rev/s == orders)."""
    per_rev = SKF_6205.defect_frequencies(60.0)
    return {"bpfo": per_rev["bpfo"], "bpfi": per_rev["bpfi"], "2bsf": 2 * per_rev["bsf"]}


def family_heights(x: np.ndarray, sample_rate: float, rpm: float, n: int) -> np.ndarray:
    """(windows, 3) heights of the BPFO, BPFI, 2xBSF families in non-overlapping windows of `n`."""
    segments = x[: len(x) // n * n].reshape(-1, n)
    spectrum = np.fft.rfft(segments, axis=1)
    whitened = np.fft.irfft(spectrum / (np.abs(spectrum) + _EPS), n=n, axis=1)
    envelope = np.abs(signal.hilbert(whitened, axis=1)) ** 2
    envelope -= envelope.mean(axis=1, keepdims=True)
    amplitude = np.abs(np.fft.rfft(envelope * signal.windows.hann(n, sym=False), axis=1))
    orders = np.fft.rfftfreq(n, 1 / sample_rate) / (rpm / 60.0)
    background = np.median(amplitude[:, (orders > 0.5) & (orders < 20)], axis=1) + _EPS
    tol = sample_rate / n / (rpm / 60.0) / 2 + 0.05  # half a bin, plus the speed's uncertainty
    heights = []
    for order in family_orders().values():
        total = np.zeros(len(segments))
        for h in range(1, HARMONICS + 1):
            near = np.abs(orders - order * h) <= tol
            total += amplitude[:, near].max(axis=1) / background
        heights.append(total)
    return np.column_stack(heights)


def study(cwru_dir: Path) -> list[dict]:
    rows = []
    names = list(family_orders())
    with (cwru_dir / "labels.csv").open() as f:
        recordings = list(csv.DictReader(f))
    for rec in recordings:
        mat = scipy.io.loadmat(cwru_dir / rec["file"])
        for channel in CHANNELS:
            x = mat[rec[channel]].ravel().astype(float)
            for n in WINDOWS:
                heights = family_heights(x, float(rec["fs_hz"]), float(rec["rpm"]), n)
                strongest = np.asarray(names)[heights.argmax(axis=1)]
                means = heights.mean(axis=0).round(2).tolist()
                own = FAMILIES.get(rec["label"])
                rows.append({
                    "file": rec["file"], "label": rec["label"],
                    "size_in": rec["fault_diameter_in"] or None, "channel": channel[:2],
                    "window": n, "windows": len(heights),
                    "mean_height": dict(zip(names, means, strict=True)),
                    "strongest": max(names, key=lambda k: heights[:, names.index(k)].mean()),
                    "own_family_strongest_share": None if own is None
                    else float(np.mean(strongest == own)),
                })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print every row as JSON")
    args = parser.parse_args()
    settings = get_settings()
    rows = study(Path(settings.data_dir) / "cwru")
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| recording | size | ch | window | BPFO | BPFI | 2xBSF | strongest | own family first |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        h = r["mean_height"]
        share = "-" if r["own_family_strongest_share"] is None else (
            f"{r['own_family_strongest_share']:.2f}")  # fmt: skip
        lines = f"{h['bpfo']} | {h['bpfi']} | {h['2bsf']}"
        print(f"| {r['label']} | {r['size_in'] or '-'} | {r['channel']} | {r['window']} | "
              f"{lines} | {r['strongest']} | {share} |")  # fmt: skip


if __name__ == "__main__":
    main()
