"""Features learned from the training histories: regimes, flat sensors, scaling, windows.

Everything fitted here is plain numbers kept in `FeatureTransform` (JSON in the model bundle), so
a served model always applies exactly the transform it was trained with.

- Operating regimes: k-means on the standardised settings for k = 1..8, taking the smallest k whose
  clusters are tight (within-cluster sum of squares below 0.1 % of the total). Multi-condition
  subsets (FD002/FD004) give 6 tight clusters; single-condition ones, where the settings are only
  noise, never get tight clusters and keep one regime.
- Flat sensors: a sensor constant inside every regime carries no information and is dropped;
  optionally so is a quantised one with at most `max_levels` distinct values in every regime
  (FD001's sensor_6: 98 % one value, the rest a z-score spike of -7).
- Scaling: z-score of every kept sensor with the mean/std of its regime (one regime = plain
  standard scaling), which removes the operating condition from the signal.
- Windows: the last `window` cycles of a unit; a unit with fewer cycles is padded at the front by
  repeating its first cycle. Each window is then smoothed (causal exponential smoothing restarted
  at the window's first cycle), so a prediction depends on exactly `window` cycles.
- Fleet weights: fitted with `sample_weight` (training.fleet_weights: every fleet of units the same
  total weight), the per-regime means and stds are weighted, so the scaling every fleet is
  expressed in is not the biggest fleet's alone. Without weights: the plain statistics.
- Novelty (`FeatureTransform.novelty`, fitted from the training rows; None in bundles saved
  before it): a scored window is novel when one of its cycles is outside what training showed:
  * settings: the distance to the nearest regime centre, in steps of `SETTING_RESOLUTION` (the
    smallest difference that is another operating point: 1 kft altitude, 0.05 Mach, 2 degrees of
    throttle), beyond max(`SETTINGS_MARGIN` x its `NOVELTY_QUANTILE` quantile over the training
    rows, 1 step). Resolution steps rather than the standardised settings: a single-condition
    fleet's settings are pure noise, so its standard deviation (0.0003 Mach in FD001) would call
    another fleet's sea-level noise (0.002 Mach in FD002) a new regime;
  * sensors: a regime-normalised (unsmoothed) sensor outside its training range (the
    1 - `NOVELTY_QUANTILE` and `NOVELTY_QUANTILE` quantiles of the training rows) widened by
    `SENSOR_MARGIN` of the range's width on each side; the training rows include every unit's
    end of life, so degradation the model was trained on stays inside.
  `score` = the largest of (settings distance / its threshold, sensor distance from its range's
  middle / half the widened range): above 1 is novel. Cost: a few array operations on the rows
  the window already transformed, for the whole batch at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from sklearn.cluster import KMeans

from machine_health.domains.turbofan.data import SENSORS, SETTINGS

#: The numeric columns of a history row, in the order `transform_values` reads them.
VALUE_COLUMNS = ["cycle", *SETTINGS, *SENSORS]
_SETTING_COLS = [VALUE_COLUMNS.index(c) for c in SETTINGS]
_SENSOR_COL = {s: VALUE_COLUMNS.index(s) for s in SENSORS}

logger = logging.getLogger(__name__)

MAX_REGIMES = 8
TIGHT_CLUSTERS = 1e-3  # within/total sum of squares that counts as distinct operating regimes
_FLAT = 1e-9
#: novelty (module doc): the training quantile the bounds start from, and how far beyond it
NOVELTY_QUANTILE = 0.999
SETTINGS_MARGIN = 1.5  # x the quantile of the training rows' distance to their regime centre
SENSOR_MARGIN = 0.25  # x the width of a sensor's training range, added on each side
#: altitude (kft), Mach, throttle resolver angle (deg): a settings difference below one step on
#: every axis is the same operating point (C-MAPSS's closest regimes differ by 5 kft, 0.08 Mach)
SETTING_RESOLUTION = (1.0, 0.05, 2.0)


@dataclass
class FeatureTransform:
    """Fitted feature transform of one model (JSON-able)."""

    window: int
    cap: float
    settings_mean: list[float]
    settings_std: list[float]
    regime_centers: list[list[float]]  # in standardised-settings space
    sensors: list[str]  # kept sensors, model feature order
    dropped: list[str]  # flat in training
    regime_mean: list[list[float]]  # [regime][sensor]
    regime_std: list[list[float]]
    cycle_scale: float = 0.0  # > 0 adds cycle / cycle_scale as a feature
    smoothing: float = 0.0  # > 0: causal exponential smoothing factor applied per unit
    extra: dict[str, Any] = field(default_factory=dict)
    #: novelty thresholds fitted on the training rows (`fit_novelty`); None: not checked
    novelty: dict[str, Any] | None = None

    @property
    def n_regimes(self) -> int:
        return len(self.regime_centers)

    @property
    def history_cycles(self) -> int:
        """Cycles of a unit's history that determine its prediction (= the window)."""
        return self.window

    @property
    def n_features(self) -> int:
        return len(self.sensors) + (1 if self.cycle_scale > 0 else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureTransform:
        return cls(**data)

    # --- applying ---------------------------------------------------------------------------
    def regimes(self, frame: pd.DataFrame) -> np.ndarray:
        """Regime index of every row (nearest fitted centre of the standardised settings)."""
        return self.regimes_of(frame[SETTINGS].to_numpy(dtype="float64"))

    def regimes_of(self, settings: np.ndarray) -> np.ndarray:
        """Regime index of every row of a `(n_rows, 3)` settings array."""
        z = (settings - self.settings_mean) / self.settings_std
        centers = np.asarray(self.regime_centers)
        return np.argmin(((z[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2), axis=1)

    def settings_distance(self, settings: np.ndarray) -> np.ndarray:
        """Distance of every row of `(n_rows, 3)` settings to the nearest regime centre, in steps
        of `SETTING_RESOLUTION` (the novelty's settings scale, see the module doc)."""
        raw = np.asarray(self.regime_centers) * self.settings_std + self.settings_mean
        # the resolution the thresholds were fitted with (a later change of the constant must
        # not move a saved model's threshold)
        step = (self.novelty or {}).get("settings_resolution", SETTING_RESOLUTION)
        steps = (settings[:, None, :] - raw[None, :, :]) / np.asarray(step)
        return np.sqrt((steps**2).sum(axis=2).min(axis=1))

    def transform_rows(self, frame: pd.DataFrame) -> np.ndarray:
        """Per-row model features `(n_rows, n_features)` (float32)."""
        return self.transform_values(frame[VALUE_COLUMNS].to_numpy(dtype="float64"))[0]

    def transform_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features `(n_rows, n_features)` float32, regime per row) of raw `VALUE_COLUMNS` rows.

        The array form of `transform_rows`: serving builds it straight from request rows, with no
        DataFrame per unit (the per-history pandas work dominated a batched model call).
        """
        regime = self.regimes_of(values[:, _SETTING_COLS])
        sensor_cols = [_SENSOR_COL[s] for s in self.sensors]
        mean = np.asarray(self.regime_mean)[regime]
        std = np.asarray(self.regime_std)[regime]
        scaled = (values[:, sensor_cols] - mean) / std
        if self.cycle_scale > 0:
            scaled = np.column_stack([scaled, values[:, 0] / self.cycle_scale])
        return scaled.astype("float32"), regime

    def last_windows(self, histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(windows `(n, window, n_features)`, regime of each last row) of raw histories.

        Each history is `(cycles, len(VALUE_COLUMNS))` in cycle order, its last row the one to
        score; the same windows as `windows(frame, every_cycle=False)`, for the whole batch in one
        vectorised transform.
        """
        windows, regime, _ = self.scored_windows(histories, novelty=False)
        return windows, regime

    def scored_windows(
        self, histories: Sequence[np.ndarray], *, novelty: bool = True
    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]] | None]:
        """`last_windows` plus the novelty of each window (None without fitted thresholds),
        judged on the rows the windows are built from: no second transform."""
        raw = np.stack([pad_windows(h, self.window, every_cycle=False)[0] for h in histories])
        n, w, c = raw.shape
        flat = raw.reshape(n * w, c)
        rows, regime = self.transform_values(flat)
        found = None
        if novelty and self.novelty is not None:
            known = np.minimum([len(h) for h in histories], w)
            found = self._novelty(flat, rows, n, known)
        windows = rows.reshape(n, w, -1)
        if self.smoothing > 0:
            windows = smooth(windows, self.smoothing)
        return windows, regime.reshape(n, w)[:, -1], found

    def _novelty(
        self, values: np.ndarray, rows: np.ndarray, n: int, known: np.ndarray
    ) -> list[dict[str, Any]]:
        """Per window: {"novel", "score", "reasons"} (module doc) of raw `values` and their
        transformed `rows`, `n` windows of `window` rows; `known[i]` = window i's real cycles
        (the others repeat its first one, so they are not counted twice in the reasons)."""
        nov = self.novelty or {}
        w = self.window
        real = np.arange(w)[None, :] >= (w - known)[:, None]  # (n, w): not padding
        far = self.settings_distance(values[:, _SETTING_COLS]).reshape(n, w)
        far = np.where(real, far / nov["settings_distance"], 0.0)
        low, high = np.asarray(nov["sensor_low"]), np.asarray(nov["sensor_high"])
        middle, half = (high + low) / 2, np.maximum((high - low) / 2, _FLAT)
        k = len(self.sensors)
        out = (np.abs(rows[:, :k] - middle.astype("float32")) / half.astype("float32")).reshape(
            n, w, k
        )
        out[~real] = 0.0
        score = np.maximum(far.max(axis=1), out.max(axis=(1, 2)))
        answers = [{"novel": False, "score": round(x, 4), "reasons": []} for x in score.tolist()]
        for i in np.flatnonzero(score > 1.0).tolist():  # the reasons of novel windows only
            reasons = answers[i]["reasons"]
            n_far, outside = int((far[i] > 1.0).sum()), out[i] > 1.0
            if n_far:
                reasons.append(
                    f"operating settings outside every known regime at {n_far} of "
                    f"{known[i]} cycles ({far[i].max():.3g} x the known distance)"
                )
            if outside.any():
                names = [s for s, hit in zip(self.sensors, outside.any(axis=0), strict=True) if hit]
                reasons.append(
                    f"{', '.join(names)} outside the training range at "
                    f"{int(outside.any(axis=1).sum())} of {known[i]} cycles"
                )
            answers[i]["novel"] = True
        return answers

    def windows(
        self, frame: pd.DataFrame, *, every_cycle: bool, keep: np.ndarray | None = None
    ) -> np.ndarray:
        """Windows `(n, window, n_features)` per unit: one per row, or the last one per unit.

        Units keep the order of their first appearance in `frame`; rows inside a unit must be in
        cycle order. `keep` (a boolean mask over the rows, with `every_cycle`) builds only the
        windows ending at the kept rows.
        """
        rows = self.transform_rows(frame)
        units = frame["unit"].to_numpy()
        out = []
        for unit in pd.unique(units):
            block = rows[units == unit]
            if not every_cycle:
                block = block[-self.window :]
            ends = keep[units == unit] if keep is not None and every_cycle else None
            out.append(pad_windows(block, self.window, every_cycle=every_cycle, ends=ends))
        windows = np.concatenate(out, axis=0)
        # Smoothing restarts in every window, so serving needs exactly `window` cycles.
        return smooth(windows, self.smoothing) if self.smoothing > 0 else windows


def pad_windows(
    rows: np.ndarray, window: int, *, every_cycle: bool = True, ends: np.ndarray | None = None
) -> np.ndarray:
    """Sliding windows ending at every row (or only the last), front-padded with the first row.

    `ends` (a boolean mask over `rows`) keeps only the windows ending at those rows; they are
    selected on the strided view, so the windows left out are never copied.
    """
    pad = max(window - 1, 0) if every_cycle else max(window - len(rows), 0)
    padded = np.concatenate([np.repeat(rows[:1], pad, axis=0), rows], axis=0)
    if not every_cycle:
        return padded[None, -window:]
    view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    if ends is not None:
        view = view[ends]
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def thin_rows(frame: pd.DataFrame, stride: int) -> np.ndarray | None:
    """Rows whose windows a training budget keeps: every `stride`-th cycle counted back from each
    unit's last one (so the end of life, where the RUL is small, is always in); None = all.

    Windows of neighbouring cycles share all but one cycle, so thinning them costs little
    information and divides the training time by `stride`.
    """
    if stride <= 1:
        return None
    last = frame.groupby("unit")["cycle"].transform("max").to_numpy()
    return (last - frame["cycle"].to_numpy()) % stride == 0


def smooth(windows: np.ndarray, alpha: float) -> np.ndarray:
    """Causal exponential smoothing of windows `(n, w, f)` along cycles, from each first cycle."""
    zi = (1.0 - alpha) * windows[:, :1, :]  # start at the first value: no start-up dip
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], windows, axis=1, zi=zi)
    return out.astype(windows.dtype)


def find_regimes(settings: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, centres) of the operating regimes found in `settings` (see module doc)."""
    mean = settings.mean(axis=0)
    std = settings.std(axis=0)
    std[std < _FLAT] = 1.0
    z = (settings - mean) / std
    total = float(((z - z.mean(axis=0)) ** 2).sum())
    centers = z.mean(axis=0, keepdims=True)
    if total > 0:
        for k in range(2, MAX_REGIMES + 1):
            km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(z)
            if km.inertia_ / total < TIGHT_CLUSTERS:
                centers = km.cluster_centers_
                break
    return mean, std, centers


def _weighted_stats(
    values: pd.DataFrame, regime: np.ndarray, n_regimes: int, weight: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mean, population std) per regime of `values`' columns with row weights `weight`."""
    x = values.to_numpy(dtype="float64")
    total = np.bincount(regime, weights=weight, minlength=n_regimes)[:, None]
    onehot = np.zeros((len(x), n_regimes))
    onehot[np.arange(len(x)), regime] = weight
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = onehot.T @ x / total
        var = onehot.T @ (x - mean[regime]) ** 2 / total
    frame = {"index": range(n_regimes), "columns": values.columns}
    return pd.DataFrame(mean, **frame), pd.DataFrame(np.sqrt(np.maximum(var, 0.0)), **frame)


def fit_novelty(transform: FeatureTransform, train: pd.DataFrame) -> dict[str, Any]:
    """The novelty thresholds of `transform` from its training rows (see the module doc)."""
    values = train[VALUE_COLUMNS].to_numpy(dtype="float64")
    rows, _ = transform.transform_values(values)
    sensors = rows[:, : len(transform.sensors)].astype("float64")
    low = np.quantile(sensors, 1 - NOVELTY_QUANTILE, axis=0)
    high = np.quantile(sensors, NOVELTY_QUANTILE, axis=0)
    width = high - low
    far = float(np.quantile(transform.settings_distance(values[:, _SETTING_COLS]),
                            NOVELTY_QUANTILE))  # fmt: skip
    return {
        "quantile": NOVELTY_QUANTILE,
        "settings_resolution": list(SETTING_RESOLUTION),
        "settings_distance": max(SETTINGS_MARGIN * far, 1.0),
        "sensor_low": (low - SENSOR_MARGIN * width).tolist(),
        "sensor_high": (high + SENSOR_MARGIN * width).tolist(),
    }


def fit_transform(
    train: pd.DataFrame,
    *,
    window: int,
    cap: float,
    use_cycle: bool = False,
    smoothing: float = 0.0,
    max_levels: int = 1,
    sample_weight: np.ndarray | None = None,
) -> FeatureTransform:
    """Learn regimes, flat sensors, per-regime scaling (weighted by `sample_weight`, one per
    row, when given) and the novelty thresholds from training histories."""
    mean, std, centers = find_regimes(train[SETTINGS].to_numpy(dtype="float64"))
    probe = FeatureTransform(
        window=window, cap=cap, settings_mean=mean.tolist(), settings_std=std.tolist(),
        regime_centers=centers.tolist(), sensors=[], dropped=[], regime_mean=[], regime_std=[],
    )  # fmt: skip
    regime = probe.regimes(train)
    grouped = train[SENSORS].groupby(regime)
    if sample_weight is None:
        r_mean = grouped.mean().reindex(range(len(centers)))
        r_std = grouped.std(ddof=0).reindex(range(len(centers))).fillna(0.0)
    else:
        r_mean, r_std = _weighted_stats(train[SENSORS], regime, len(centers), sample_weight)
        r_std = r_std.fillna(0.0)
    flat = (r_std <= _FLAT).all(axis=0)
    if max_levels > 1:
        flat |= (grouped.nunique() <= max_levels).all(axis=0)
    kept = [s for s in SENSORS if not flat[s]]
    dropped = [s for s in SENSORS if flat[s]]
    std_kept = r_std[kept].to_numpy(copy=True)  # written below
    std_kept[std_kept <= _FLAT] = 1.0  # flat in one regime only: centre it, do not blow it up
    logger.info(
        "features: %d regime(s), %d sensors kept, dropped %s",
        len(centers), len(kept), ",".join(dropped) or "-",
    )  # fmt: skip
    transform = FeatureTransform(
        window=window,
        cap=float(cap),
        settings_mean=mean.tolist(),
        settings_std=std.tolist(),
        regime_centers=centers.tolist(),
        sensors=kept,
        dropped=dropped,
        regime_mean=r_mean[kept].fillna(0.0).to_numpy().tolist(),
        regime_std=std_kept.tolist(),
        cycle_scale=float(train["cycle"].max()) if use_cycle else 0.0,
        smoothing=smoothing,
    )
    transform.novelty = fit_novelty(transform, train)
    return transform


def _slope(windows: np.ndarray) -> np.ndarray:
    """Least-squares slope per feature of windows `(n, w, f)` along the cycles."""
    w = windows.shape[1]
    t = np.arange(w, dtype="float32") - (w - 1) / 2
    return np.einsum("nwf,w->nf", windows, t) / float((t**2).sum() or 1.0)


def rolling_features(windows: np.ndarray, scales: Sequence[int] = ()) -> np.ndarray:
    """Tabular summary of windows `(n, w, f)`: last, mean, std, min, max and slope per feature,
    plus the mean and slope of the last `k` cycles for every `k` in `scales` (shorter than `w`).

    `scales=()` is the original feature set (bundles saved before the multi-scale features).
    """
    parts = [
        windows[:, -1, :],
        windows.mean(axis=1),
        windows.std(axis=1),
        windows.min(axis=1),
        windows.max(axis=1),
        _slope(windows),
    ]
    for k in scales:
        if 1 < k < windows.shape[1]:
            tail = windows[:, -k:, :]
            parts += [tail.mean(axis=1), _slope(tail)]
    return np.concatenate(parts, axis=1)
