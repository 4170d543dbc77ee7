"""Log-mel spectrograms of machine sounds and the clip-level statistics the detector reads.

Computed with numpy's FFT and a mel filterbank built here (about 30 lines) instead of librosa:
librosa pulls numba / llvmlite / soundfile / audioread into the serving image for one STFT and
one filterbank, and its defaults (centred frames, Slaney mel scale) are easy to pin by hand.
The settings are those of the challenge's baseline (16 kHz, 1024-sample frames, hop 512,
128 mel bands, power spectrum in dB), so the reproduced autoencoder reads the same frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: the clip statistics `clip_stats` can compute, in column order.
STATS = ("mean", "std", "p95", "delta")
#: floor of the mel power before the log (the baseline's epsilon): silence is -100 dB, not -inf.
_EPS = 1e-10


@dataclass(frozen=True)
class FeatureConfig:
    """Spectrogram settings, saved in the bundle (serving must compute the same frames)."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 128
    #: clip statistics: bands merged into this many groups for the covariance (see clip_stats).
    stat_bands: int = 8
    #: which clip statistics the detector reads (a subset of STATS, chosen on validation).
    stats: tuple[str, ...] = ("std",)

    def __post_init__(self) -> None:
        if self.n_mels % self.stat_bands or not set(self.stats) <= set(STATS) or not self.stats:
            raise ValueError(f"bad feature config {self}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        stats = tuple(str(s) for s in known.pop("stats", ("std",)))
        return cls(**{k: int(v) for k, v in known.items()}, stats=stats)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)  # HTK formula


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters `(n_mels, n_fft // 2 + 1)` equally spaced in mel, each of unit area."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_mel = np.linspace(0.0, _hz_to_mel(np.asarray(sample_rate / 2.0)), n_mels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    # Unit area keeps wide high bands from dominating by their width alone (Slaney norm).
    bank /= np.maximum(bank.sum(axis=1, keepdims=True), 1e-12)
    bank.setflags(write=False)
    return bank


def log_mel(waves: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """dB log-mel spectrograms `(n, frames, n_mels)` of clips `(n, samples)` at config rate."""
    waves = np.atleast_2d(np.asarray(waves, dtype=np.float32))
    if waves.shape[1] < config.n_fft:
        raise ValueError(f"clip shorter than one frame ({config.n_fft} samples)")
    frames = np.lib.stride_tricks.sliding_window_view(waves, config.n_fft, axis=1)
    frames = frames[:, :: config.hop]
    window = np.hanning(config.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    bank = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels)
    mel = power @ bank.T.astype(np.float32)
    return (10.0 * np.log10(mel + _EPS)).astype(np.float32)


def stack_frames(spectrograms: np.ndarray, context: int = 5) -> np.ndarray:
    """`context` consecutive frames concatenated: `(n, frames - context + 1, context * mels)`.

    The input of the challenge's autoencoder baseline (5 x 128 = 640 values per vector).
    """
    n, frames, mels = spectrograms.shape
    view = np.lib.stride_tricks.sliding_window_view(spectrograms, context, axis=1)
    # view: (n, frames - context + 1, mels, context) -> frame-major vectors
    return view.transpose(0, 1, 3, 2).reshape(n, frames - context + 1, context * mels)


def clip_stats(spectrograms: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Clip-level statistics `(n, len(config.stats) * stat_bands)` of log-mel spectrograms.

    `spectrograms` may have fewer bands than `n_mels` (e.g. the 32-band archived form) as long
    as `stat_bands` divides their count: a mean of band means is the mean of the bands.

    Per group of adjacent mel bands: mean level, standard deviation over time (the valve's
    open / close events), the 95th percentile (the loudest events) and the mean absolute
    frame-to-frame change (how abrupt they are). Bands are merged in groups so that the
    covariance of ~50 normal training clips is estimable (128 x 4 would be 512 dimensions).
    """
    n, frames, mels = spectrograms.shape
    if mels % config.stat_bands:
        raise ValueError(f"{mels} bands cannot be merged into {config.stat_bands} groups")
    groups = spectrograms.reshape(n, frames, config.stat_bands, mels // config.stat_bands)
    banded = groups.mean(axis=-1)
    compute = {
        "mean": lambda: banded.mean(axis=1),
        "std": lambda: banded.std(axis=1),
        "p95": lambda: np.percentile(banded, 95, axis=1),
        "delta": lambda: np.abs(np.diff(banded, axis=1)).mean(axis=1),
    }
    return np.concatenate([compute[s]() for s in config.stats], axis=1).astype(np.float64)


def reduce_bands(spectrograms: np.ndarray, bands: int = 32) -> np.ndarray:
    """Log-mel spectrograms averaged into `bands` groups: the compact form archived per clip
    (311 frames x 32 bands, ~20 kB as float16 instead of 320 kB of audio); `clip_stats` of
    this form equals that of the full spectrogram for any `stat_bands` dividing `bands`."""
    n, frames, mels = spectrograms.shape
    return spectrograms.reshape(n, frames, bands, mels // bands).mean(axis=-1)


def stat_names(config: FeatureConfig) -> list[str]:
    """Names of the `clip_stats` columns (drift monitoring, the UI)."""
    return [f"{stat}_band{b:02d}" for stat in config.stats for b in range(config.stat_bands)]
