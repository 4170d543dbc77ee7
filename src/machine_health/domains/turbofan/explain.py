"""Why a turbofan RUL is what it is: the sensors whose recent trends moved it most.

Method ("trend removal", a cheap occlusion attribution on the whole model, any member kinds):
for every scored unit history and every sensor the model reads, the sensor's linear trend inside
the model's window is removed and the window scored again; the sensor's contribution is
RUL(actual) - RUL(trend removed), in cycles. Negative: the trend shortened the predicted life.

- Where the trend is removed: in the regime-normalised rows (the per-regime z-scores the model
  reads), before the window's smoothing, which is then applied as `predict` does. Raw values jump
  whenever the operating regime changes (FD002: six regimes), so a raw "level at the window's
  start" would be another regime's level; the z-scores are comparable across regimes.
- How: the least-squares slope of the sensor over the window's real cycles (per cycle, against
  the cycle numbers) is subtracted, anchored at the window's first real cycle:
  `z'(t) = z(t) - slope * (cycle(t) - first cycle)`. The sensor keeps its early level and its
  cycle-to-cycle noise; only the drift goes. Replacing the values by a constant early level
  would also remove the noise, and the tabular members (window std/min/max features) would
  read that as a change too, so the attribution would not be the trend's alone. A linear fit
  is robust to one noisy early cycle, which a single "value at the start" is not.
- Short histories are padded by repeating their first cycle (as `predict` does): the padding
  sits at the anchor, so it is left unchanged, and the slope is fitted on the real cycles only.
  A sensor with no trend in the window (slope exactly 0, e.g. one constant cycle) contributes
  exactly 0 without being scored. Sensors the transform dropped (flat in training: FD001's T2,
  P2, P15, epr, farB, Nf_dmd, PCNfR_dmd) are not read by the model and never ranked.
- Contributions are not additive (the model is not linear): each says how far that one trend
  alone moves the answer.

Every variant of every history goes through ONE `predict_windows` call (n x (1 + sensors)
windows: 32 histories of FD001's 14 sensors = 480 windows). The unmodified window is scored in
the same call, so each difference is between two scorings of the same batch; `rul` reported is
`predict`'s own output, which the explanation never changes.

`trend` is the slope in the regime-normalised units the model sees (training standard deviations
per cycle, comparable between sensors); `trend_phys` is the same slope in the sensor's physical
unit per cycle (x the standard deviation of the last cycle's regime).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from machine_health.domains.turbofan.domain import SENSOR_RANGES
from machine_health.domains.turbofan.features import pad_windows, smooth

if TYPE_CHECKING:
    from machine_health.domains.turbofan.bundle import History, TurbofanBundle

METHOD = "trend-removal"
#: sensors reported per explanation (ranked by |contribution|)
TOP_SENSORS = 5
#: a contribution below half a cycle does not change the RUL as reported (to the cycle): not a
#: reason, left out of the ranking
MIN_CONTRIBUTION = 0.5

#: readable name and unit of each C-MAPSS sensor column (sensor_1 = T2, ...)
_LABEL = {f"sensor_{i}": (name, unit) for i, (name, _, unit, _, _) in enumerate(SENSOR_RANGES, 1)}


def sig(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (plain float, JSON-able)."""
    if value == 0 or not math.isfinite(value):
        return 0.0 if value == 0 else float(value)
    return float(f"{value:.{digits}g}")


def trend_windows(
    bundle: TurbofanBundle, histories: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows `(n, 1 + k, window, features)`, slopes `(n, k)`, regime std `(n, k)`) of raw
    histories (`history_values`): variant 0 is the window `predict` scores, variant 1 + j the
    same with sensor j's trend removed (module doc); `k` = the sensors the model reads."""
    transform = bundle.transform
    w, k = transform.window, len(transform.sensors)
    raw = np.stack([pad_windows(h, w, every_cycle=False)[0] for h in histories])
    n = raw.shape[0]
    rows, regime = transform.transform_values(raw.reshape(n * w, -1))
    rows = rows.reshape(n, w, -1).astype("float64")
    known = np.minimum([len(h) for h in histories], w)
    real = np.arange(w)[None, :] >= (w - known)[:, None]  # (n, w): not padding
    # cycles since the window's first real cycle; the padding repeats that cycle, so it is 0
    t = raw[:, :, 0] - raw[np.arange(n), w - known, 0][:, None]
    t_mean = (t * real).sum(axis=1) / known
    dt = np.where(real, t - t_mean[:, None], 0.0)
    denom = (dt**2).sum(axis=1)
    z = rows[:, :, :k]
    z_mean = (z * real[:, :, None]).sum(axis=1) / known[:, None]
    num = np.einsum("nw,nwk->nk", dt, z - z_mean[:, None, :])
    slope = np.divide(num, denom[:, None], out=np.zeros_like(num), where=denom[:, None] > 0)
    variants = np.repeat(rows[:, None], 1 + k, axis=1)  # (n, 1 + k, w, f)
    j = np.arange(k)
    variants[:, 1 + j, :, j] -= slope.T[:, :, None] * t[None, :, :]
    variants = variants.reshape(n * (1 + k), w, -1).astype("float32")
    if transform.smoothing > 0:
        variants = smooth(variants, transform.smoothing)
    last_regime = regime.reshape(n, w)[:, -1]
    std = np.asarray(transform.regime_std, dtype="float64")[last_regime]
    return variants.reshape(n, 1 + k, w, -1), slope, std


def explain(
    bundle: TurbofanBundle, inputs: Sequence[History], outputs: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One explanation per unit history (`ModelBundle.explain`; method in the module doc):
    `{"method", "summary", "evidence", "rul", "regime", "cycles_in_window", "sensors"}`, plus
    `"novelty": {"novel", "score"}` when `predict` judged it."""
    from machine_health.domains.turbofan.bundle import history_values

    if len(inputs) != len(outputs):
        raise ValueError(f"{len(inputs)} inputs but {len(outputs)} outputs to explain")
    if len(inputs) == 0:
        return []
    transform = bundle.transform
    histories = [history_values(h, transform.history_cycles) for h in inputs]
    windows, slope, std = trend_windows(bundle, histories)
    n, variants, w, f = windows.shape
    rul = bundle.predict_windows(windows.reshape(n * variants, w, f)).reshape(n, variants)
    # a sensor without trend is not changed: exactly 0, whatever the batch's float noise
    contribution = np.where(slope != 0, rul[:, :1] - rul[:, 1:], 0.0)
    return [
        _one(transform.sensors, out, contribution[i], slope[i], std[i], w)
        for i, out in enumerate(outputs)
    ]


def _one(
    sensors: Sequence[str],
    output: Mapping[str, Any],
    contribution: np.ndarray,
    slope: np.ndarray,
    std: np.ndarray,
    window: int,
) -> dict[str, Any]:
    order = sorted(range(len(sensors)), key=lambda j: (-abs(contribution[j]), j))
    ranked = [j for j in order if abs(contribution[j]) >= MIN_CONTRIBUTION][:TOP_SENSORS]
    rows = []
    for j in ranked:
        label, unit = _LABEL.get(sensors[j], (sensors[j], ""))
        rows.append({
            "sensor": sensors[j], "label": label, "contribution": sig(float(contribution[j])),
            "trend": sig(float(slope[j])), "trend_phys": sig(float(slope[j] * std[j])),
            "unit": unit,
        })  # fmt: skip
    rul, regime = float(output["rul"]), int(output["regime"])
    in_window = int(output.get("cycles_in_window", window))
    if rows:
        moved = ", ".join(
            f"{r['label']} ({r['contribution']:+.3g}{' cycles' if i == 0 else ''})"
            for i, r in enumerate(rows[:3])
        )
        verb = "shortened" if rows[0]["contribution"] < 0 else "lengthened"
        summary = f"RUL {rul:.0f}: {verb} most by the trends of {moved}; regime {regime}"
    else:
        summary = (
            f"RUL {rul:.0f}: no sensor trend over the last {in_window} cycles moves it by "
            f"{MIN_CONTRIBUTION} cycles or more; regime {regime}"
        )
    answer: dict[str, Any] = {
        "method": METHOD,
        "summary": summary,
        "evidence": [
            {"name": r["sensor"], "label": r["label"], "value": r["contribution"]} for r in rows
        ],
        "rul": sig(rul),
        "regime": regime,
        "cycles_in_window": in_window,
        "sensors": rows,
    }
    novelty = output.get("novelty")
    if novelty is not None:
        answer["novelty"] = {"novel": bool(novelty["novel"]), "score": sig(float(novelty["score"]))}
        if novelty["novel"]:
            answer["summary"] += " (NOVEL input, outside training: do not trust blindly)"
    return answer
