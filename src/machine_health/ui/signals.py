"""What the predictions page draws for one vibration window: waveform, spectrum, envelope.

The envelope spectrum is computed with the vibration domain's own signal code (band-pass around
the structural resonance, Hilbert envelope) and the bearing's defect frequencies come from its
geometry, so the marked lines are where the model's envelope features look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from machine_health.domains.vibration.features import DEFECTS, FeatureConfig
from machine_health.domains.vibration.physics import (
    BearingGeometry,
    bandpass_sos,
    envelope_spectrum,
    hann,
)

#: envelope spectrum shown up to this many times the highest defect frequency (BPFI)
_ENVELOPE_SPAN = 3.5


@dataclass(frozen=True)
class WindowAnalysis:
    time_s: np.ndarray
    samples: np.ndarray
    freqs: np.ndarray
    spectrum: np.ndarray
    envelope_freqs: np.ndarray
    envelope: np.ndarray
    defects: dict[str, float]  # bpfo, bpfi, bsf, ftf, shaft (Hz)


def analyse(
    samples: np.ndarray,
    sample_rate: float,
    rpm: float | None,
    config: FeatureConfig | None = None,
) -> WindowAnalysis:
    """Spectrum, envelope spectrum and defect frequencies of one window."""
    config = config or FeatureConfig()
    geometry: BearingGeometry = config.bearing
    x = np.asarray(samples, dtype=float)
    taper = hann(len(x))
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * taper)) * 2 / taper.sum()
    sos = bandpass_sos(*config.envelope_band, sample_rate)
    env_freqs, env = envelope_spectrum(x[None, :], sample_rate, sos, n_fft=len(x) * 4)
    defects = geometry.defect_frequencies(rpm or config.nominal_rpm)
    keep = env_freqs <= _ENVELOPE_SPAN * max(defects[d] for d in DEFECTS)
    return WindowAnalysis(
        time_s=np.arange(len(x)) / sample_rate,
        samples=x,
        freqs=freqs,
        spectrum=spectrum,
        envelope_freqs=env_freqs[keep],
        envelope=env[0, keep],
        defects=defects,
    )


def defect_lines(defects: dict[str, float], harmonics: int = 3) -> list[dict[str, object]]:
    """Rows (name, harmonic, hz) of the defect-frequency marks of the envelope spectrum."""
    return [
        {"line": f"{name.upper()} x{h}", "defect": name.upper(), "hz": defects[name] * h}
        for name in DEFECTS
        for h in range(1, harmonics + 1)
    ]
