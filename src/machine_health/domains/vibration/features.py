"""Feature extraction of waveform windows: time statistics, spectra and bearing-defect envelopes.

Every feature is defined in physical units (Hz, not FFT bins), so windows of any length at the
model's sample rate give comparable values. `extract_features` works on a whole batch at once
(one FFT / filter call along the last axis of a 2-D array).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from machine_health.domains.vibration.physics import (
    SKF_6205,
    BearingGeometry,
    bandpass_sos,
    envelope_spectrum,
    hann,
)

DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")
_EPS = 1e-12
_CHUNK = 512  # windows per feature pass (see extract_features)


@dataclass(frozen=True)
class FeatureConfig:
    """Everything the features depend on; stored in the bundle with the models."""

    sample_rate: float = 48_000.0
    window: int = 2048
    bearing: BearingGeometry = SKF_6205
    #: rpm used for the defect frequencies when a request does not give one.
    nominal_rpm: float = 1796.0
    #: band-pass of the envelope analysis: around the structural resonances the impacts excite.
    envelope_band: tuple[float, float] = (2_000.0, 8_000.0)
    harmonics: int = 3
    #: edges (Hz) of the band energies; the last band ends at the Nyquist frequency.
    band_edges: tuple[float, ...] = (0, 250, 500, 1_000, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000)
    #: zero-padding factor of the envelope FFT (finer line positions, same resolution).
    envelope_pad: int = 4
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "window": self.window,
            "bearing": self.bearing.as_dict(),
            "nominal_rpm": self.nominal_rpm,
            "envelope_band": list(self.envelope_band),
            "harmonics": self.harmonics,
            "band_edges": list(self.band_edges),
            "envelope_pad": self.envelope_pad,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        return replace(
            cls(),
            sample_rate=float(data["sample_rate"]),
            window=int(data["window"]),
            bearing=BearingGeometry(**data["bearing"]),
            nominal_rpm=float(data["nominal_rpm"]),
            envelope_band=tuple(data["envelope_band"]),
            harmonics=int(data["harmonics"]),
            band_edges=tuple(data["band_edges"]),
            envelope_pad=int(data["envelope_pad"]),
            extra=dict(data.get("extra", {})),
        )


TIME_FEATURES = (
    "log_rms",
    "log_peak",
    "crest_factor",
    "kurtosis",
    "skewness",
    "shape_factor",
    "impulse_factor",
    "clearance_factor",
)
SPECTRAL_STATS = ("centroid_khz", "spread_khz", "entropy", "flatness", "rolloff_khz")


def feature_names(config: FeatureConfig) -> list[str]:
    """Column names of `extract_features`, in order."""
    edges = [*config.band_edges, config.sample_rate / 2]
    bands = [f"{int(lo)}-{int(hi)}Hz" for lo, hi in itertools.pairwise(edges)]
    names = list(TIME_FEATURES)
    names += [f"log_energy_{b}" for b in bands]
    names += [f"share_{b}" for b in bands]
    names += list(SPECTRAL_STATS)
    names += ["log_envelope_rms"]
    names += [f"env_{d}_h{h}" for d in (*DEFECTS, "shaft") for h in range(1, config.harmonics + 1)]
    return names


def _time_features(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=1, keepdims=True)
    abs_x = np.abs(centred)
    # Moments by hand (products, not `**`: numpy's pow on odd powers is ~20x slower), and
    # scipy.stats' wrappers cost more than the arithmetic on one window.
    squared = centred * centred
    rms = np.sqrt(squared.mean(axis=1)) + _EPS
    peak = abs_x.max(axis=1) + _EPS
    mean_abs = abs_x.mean(axis=1) + _EPS
    sqrt_mean = np.sqrt(abs_x).mean(axis=1) ** 2 + _EPS
    variance = rms**2
    skewness = (squared * centred).mean(axis=1) / variance**1.5
    kurtosis = (squared * squared).mean(axis=1) / variance**2
    return np.column_stack(
        [
            np.log(rms),
            np.log(peak),
            peak / rms,
            kurtosis,
            skewness,
            rms / mean_abs,
            peak / mean_abs,
            peak / sqrt_mean,
        ]
    )


def _spectral_features(x: np.ndarray, config: FeatureConfig) -> np.ndarray:
    length = x.shape[1]
    freqs = np.fft.rfftfreq(length, 1 / config.sample_rate)
    taper = hann(length)
    # Power per bin, scaled so that the band sums are comparable across window lengths.
    power = np.abs(np.fft.rfft((x - x.mean(axis=1, keepdims=True)) * taper, axis=1)) ** 2
    power /= length * (taper**2).sum()
    edges = [*config.band_edges, config.sample_rate / 2 + 1]
    masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in itertools.pairwise(edges)])
    energy = power @ masks.T.astype(float) + _EPS
    total = power.sum(axis=1) + _EPS
    share = energy / total[:, None]
    p = power / total[:, None]
    khz = freqs / 1000
    centroid = p @ khz
    spread = np.sqrt(np.maximum(p @ khz**2 - centroid**2, 0))
    entropy = -(p * np.log(p + _EPS)).sum(axis=1) / np.log(p.shape[1])
    flatness = np.exp(np.log(power + _EPS).mean(axis=1)) / (power.mean(axis=1) + _EPS)
    rolloff = khz[np.minimum((np.cumsum(p, axis=1) < 0.85).sum(axis=1), len(khz) - 1)]
    return np.column_stack([np.log(energy), share, centroid, spread, entropy, flatness, rolloff])


def _envelope_features(x: np.ndarray, rpm: np.ndarray, config: FeatureConfig) -> np.ndarray:
    length = x.shape[1]
    sos = bandpass_sos(*config.envelope_band, config.sample_rate)
    freqs, amp = envelope_spectrum(x, config.sample_rate, sos, n_fft=length * config.envelope_pad)
    bin_hz = freqs[1]
    resolution = config.sample_rate / length
    # Background level: the median line of the envelope spectrum up to 1 kHz (robust to lines).
    background = np.median(amp[:, (freqs > resolution) & (freqs < 1_000)], axis=1) + _EPS
    targets = []
    for name in (*DEFECTS, "shaft"):
        base = np.array([config.bearing.defect_frequencies(r)[name] for r in rpm])
        targets += [base * h for h in range(1, config.harmonics + 1)]
    target = np.stack(targets, axis=1)  # (n, K) in Hz
    # Search each line within half the true resolution (+1 bin): speed estimates are not exact.
    half_width = int(np.ceil(resolution / 2 / bin_hz)) + 1
    centre = np.rint(target / bin_hz).astype(int)
    idx = np.clip(centre[:, :, None] + np.arange(-half_width, half_width + 1), 1, amp.shape[1] - 1)
    lines = np.take_along_axis(amp[:, None, :], idx, axis=2).max(axis=2)
    log_env_rms = np.log(np.sqrt((amp**2).sum(axis=1) / 2) + _EPS)
    return np.column_stack([log_env_rms, np.log(lines / background[:, None] + _EPS)])


def extract_features(
    windows: np.ndarray, rpm: np.ndarray | None, config: FeatureConfig
) -> np.ndarray:
    """Features of a batch of windows `(n, length)` sampled at `config.sample_rate`.

    `rpm` gives each window's shaft speed (NaN or None = unknown: `config.nominal_rpm`).
    """
    x = np.atleast_2d(np.asarray(windows, dtype=np.float64))
    speeds = np.full(x.shape[0], config.nominal_rpm) if rpm is None else np.asarray(rpm, float)
    speeds = np.where(np.isfinite(speeds), speeds, config.nominal_rpm)
    starts = range(0, x.shape[0], _CHUNK)
    if len(starts) == 1:  # serving: one request batch, no pool
        return _chunk_features(x, speeds, config)
    # In chunks: the zero-padded envelope spectra of a whole training set would be gigabytes,
    # and chunks that stay in cache are ~2x faster per window than one huge array. Threads,
    # not processes: numpy's and scipy's FFT and filter loops release the GIL.
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        parts = pool.map(
            lambda i: _chunk_features(x[i : i + _CHUNK], speeds[i : i + _CHUNK], config), starts
        )
        return np.concatenate(list(parts))


def _workers() -> int:
    """The CPUs this process may use (a pod's cpuset, not the node's core count), at most 8."""
    # sched_getaffinity is Linux only; elsewhere (a developer's macOS) the core count.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, 8))


def _chunk_features(x: np.ndarray, speeds: np.ndarray, config: FeatureConfig) -> np.ndarray:
    return np.column_stack(
        [_time_features(x), _spectral_features(x, config), _envelope_features(x, speeds, config)]
    )
