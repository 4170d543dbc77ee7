"""Bearing kinematics and the signal operations the features are built from (scipy.signal).

The defect frequencies are the classical rolling-element bearing formulas: a localised defect on
the outer race, inner race or a ball is struck at a fixed rate set by the shaft speed and the
bearing geometry, and the impacts modulate a structural resonance. Band-passing around that
resonance and taking the Hilbert envelope demodulates them, so the envelope spectrum shows lines
at BPFO / BPFI / BSF (and the cage frequency FTF) where the raw spectrum shows only the resonance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal

from machine_health.errors import InputError


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry (lengths in any one unit, angle in degrees)."""

    n_balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def defect_frequencies(self, rpm: float) -> dict[str, float]:
        """BPFO, BPFI, BSF, FTF and the shaft rate (Hz) at `rpm`."""
        shaft = rpm / 60.0
        ratio = (
            self.ball_diameter
            / self.pitch_diameter
            * math.cos(math.radians(self.contact_angle_deg))
        )
        return {
            "bpfo": self.n_balls / 2 * shaft * (1 - ratio),
            "bpfi": self.n_balls / 2 * shaft * (1 + ratio),
            "bsf": self.pitch_diameter / (2 * self.ball_diameter) * shaft * (1 - ratio**2),
            "ftf": shaft / 2 * (1 - ratio),
            "shaft": shaft,
        }

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


#: CWRU drive-end bearing: SKF 6205-2RS JEM (inches).
SKF_6205 = BearingGeometry(n_balls=9, ball_diameter=0.3126, pitch_diameter=1.537)


def resample(samples: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased); a no-op at equal rates."""
    if math.isclose(from_rate, to_rate, rel_tol=1e-9):
        return samples
    # A rational approximation of the rate ratio keeps resample_poly's filters small.
    ratio = Fraction(to_rate / from_rate).limit_denominator(1000)
    if ratio.numerator == 0:
        raise InputError(f"cannot resample from {from_rate} Hz to {to_rate} Hz")
    return signal.resample_poly(samples, ratio.numerator, ratio.denominator, axis=-1)


@lru_cache(maxsize=32)
def bandpass_sos(low_hz: float, high_hz: float, sample_rate: float, order: int = 4) -> np.ndarray:
    """A Butterworth band-pass as second-order sections (stable at high orders); cached."""
    nyquist = sample_rate / 2
    high_hz = min(high_hz, 0.95 * nyquist)
    if not 0 < low_hz < high_hz:
        raise InputError(f"envelope band {low_hz}-{high_hz} Hz does not fit {sample_rate} Hz")
    return signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")


def envelope_spectrum(
    windows: np.ndarray, sample_rate: float, sos: np.ndarray, n_fft: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and amplitude of the envelope spectrum of each row of `windows`.

    Band-pass -> |Hilbert analytic signal| -> remove the mean -> Hann-windowed
    one-sided amplitude spectrum. `n_fft` > window length zero-pads (interpolates the lines;
    the resolution stays sample_rate / window length).
    """
    # Forward filtering only: the phase shift moves the envelope in time, which its magnitude
    # spectrum ignores, and sosfiltfilt's padding and initial-state solve cost 10x the filter.
    band = signal.sosfilt(sos, windows, axis=-1)
    envelope = np.abs(signal.hilbert(band, axis=-1))
    envelope -= envelope.mean(axis=-1, keepdims=True)
    length = windows.shape[-1]
    taper = hann(length)
    n_fft = n_fft or length
    amplitude = np.abs(np.fft.rfft(envelope * taper, n=n_fft, axis=-1)) * 2 / taper.sum()
    return np.fft.rfftfreq(n_fft, 1 / sample_rate), amplitude


@lru_cache(maxsize=32)
def hann(length: int) -> np.ndarray:
    """Periodic Hann taper (cached: the serving path asks for the same length every call)."""
    taper = signal.windows.hann(length, sym=False)
    taper.flags.writeable = False
    return taper
