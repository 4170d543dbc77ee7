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
        raw = np.stack([pad_windows(h, self.window, every_cycle=False)[0] for h in histories])
        n, w, c = raw.shape
        rows, regime = self.transform_values(raw.reshape(n * w, c))
        windows = rows.reshape(n, w, -1)
        if self.smoothing > 0:
            windows = smooth(windows, self.smoothing)
        return windows, regime.reshape(n, w)[:, -1]

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


def fit_transform(
    train: pd.DataFrame,
    *,
    window: int,
    cap: float,
    use_cycle: bool = False,
    smoothing: float = 0.0,
    max_levels: int = 1,
) -> FeatureTransform:
    """Learn regimes, flat sensors and per-regime scaling from training histories."""
    mean, std, centers = find_regimes(train[SETTINGS].to_numpy(dtype="float64"))
    probe = FeatureTransform(
        window=window, cap=cap, settings_mean=mean.tolist(), settings_std=std.tolist(),
        regime_centers=centers.tolist(), sensors=[], dropped=[], regime_mean=[], regime_std=[],
    )  # fmt: skip
    regime = probe.regimes(train)
    grouped = train[SENSORS].groupby(regime)
    r_mean = grouped.mean().reindex(range(len(centers)))
    r_std = grouped.std(ddof=0).reindex(range(len(centers))).fillna(0.0)
    flat = (r_std <= _FLAT).all(axis=0)
    if max_levels > 1:
        flat |= (grouped.nunique() <= max_levels).all(axis=0)
    kept = [s for s in SENSORS if not flat[s]]
    dropped = [s for s in SENSORS if flat[s]]
    std_kept = r_std[kept].to_numpy()
    std_kept[std_kept <= _FLAT] = 1.0  # flat in one regime only: centre it, do not blow it up
    logger.info(
        "features: %d regime(s), %d sensors kept, dropped %s",
        len(centers), len(kept), ",".join(dropped) or "-",
    )  # fmt: skip
    return FeatureTransform(
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
