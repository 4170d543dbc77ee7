"""`AcousticBundle`: spectrogram settings + detector + alarm threshold, saved as one folder.

Files: `acoustic.json` (settings, threshold, facts), `detector.npz` and `smoke.npz` (plain
arrays read with `allow_pickle=False`: nothing in the model folder can run code when loaded).

Serving path for a batch: decode every clip (base64 WAV), bring it to the model's rate, compute
its log-mel spectrogram and clip statistics, and score all clips with ONE detector call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from machine_health.domains.acoustic.audio import (
    b64decode_strict,
    check_rate_and_length,
    decode_wav,
    to_model_rate,
    wav_base64,
)
from machine_health.domains.acoustic.data import ANOMALY, NORMAL
from machine_health.domains.acoustic.features import (
    FeatureConfig,
    clip_stats,
    log_mel,
)
from machine_health.domains.acoustic.model import Detector
from machine_health.domains.base import ModelBundle
from machine_health.errors import InputError, ModelError

_CONFIG_FILE = "acoustic.json"
_DETECTOR_FILE = "detector.npz"
_SMOKE_FILE = "smoke.npz"


def clip_samples(item: Any) -> tuple[np.ndarray, int]:
    """(float32 samples, rate) of one request item: `{"audio": base64 WAV}` (a dict or the
    input model), or `{"samples": array, "sample_rate": int}` (in-process callers)."""
    if callable(getattr(item, "decoded", None)):  # the validated input model: decoded once
        return item.decoded()
    get = item.get if isinstance(item, Mapping) else lambda k, d=None: getattr(item, k, d)
    audio = get("audio")
    if audio is not None:
        return decode_wav(b64decode_strict(audio) if isinstance(audio, str) else bytes(audio))
    samples, rate = get("samples"), get("sample_rate")
    if samples is None or rate is None:
        raise InputError("an acoustic item needs `audio` (base64 WAV) or samples + sample_rate")
    samples = np.asarray(samples, dtype=np.float32).ravel()
    if not np.all(np.isfinite(samples)) or np.any(np.abs(samples) > 1.0):
        raise InputError("samples must be finite and within the PCM range [-1, 1]")
    check_rate_and_length(int(rate), samples.size)
    return samples, int(rate)


@dataclass
class AcousticBundle(ModelBundle):
    """Everything needed to score a machine-sound clip, fitted together."""

    domain: ClassVar[str] = "acoustic"

    config: FeatureConfig
    detector: Detector
    threshold: float
    target_fpr: float
    #: a few real normal clips (int16 at the model rate) kept from training
    smoke_clips: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels an inspection may give a clip (POST /feedback checks them)."""
        return (NORMAL, ANOMALY)

    # --- scoring ------------------------------------------------------------------------------
    def spectrograms(self, inputs: Sequence[Any]) -> tuple[list[np.ndarray], list[float]]:
        """Log-mel spectrogram `(frames, n_mels)` of every item at the model's rate, and its
        duration in seconds."""
        spectra, seconds = [], []
        for item in inputs:
            samples, rate = clip_samples(item)
            if callable(getattr(item, "spectrogram", None)):  # the input model: computed once,
                spectra.append(item.spectrogram(self.config))  # shared with its archived form
            else:
                at_rate = to_model_rate(samples, rate, self.config.sample_rate)
                spectra.append(log_mel(at_rate[None], self.config)[0])
            seconds.append(round(len(samples) / rate, 3))
        return spectra, seconds

    def score_spectrograms(self, spectra: Sequence[np.ndarray]) -> np.ndarray:
        """Anomaly score per spectrogram (clips may differ in length: stats per clip, one
        detector call)."""
        stats = np.concatenate([clip_stats(s[None], self.config) for s in spectra])
        return self.detector.score(stats)

    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Score a batch of clips; one dict per clip."""
        if len(inputs) == 0:
            return []
        spectra, seconds = self.spectrograms(inputs)
        scores = self.score_spectrograms(spectra)
        return [
            {
                "anomaly_score": float(score),
                "is_anomaly": bool(score > self.threshold),
                "threshold": float(self.threshold),
                "seconds": duration,
            }
            for score, duration in zip(scores, seconds, strict=True)
        ]

    def explain(
        self, inputs: Sequence[Any], outputs: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """The bands whose statistics deviate most from normal, as terms of the detector's own
        score (see `acoustic.explain`: imported here, the serving path never pays for it)."""
        from machine_health.domains.acoustic.explain import explain

        return explain(self, inputs, outputs)

    def smoke_inputs(self) -> list[dict[str, Any]]:
        return [{"audio": wav_base64(c, self.config.sample_rate)} for c in self.smoke_clips]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": f"{self.detector.kind} detector on clip log-mel statistics",
            "sample_rate": self.config.sample_rate,
            "stats": list(self.config.stats),
            "stat_bands": self.config.stat_bands,
            "n_features": int(self.detector.mean.shape[0]),
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            **{k: v for k, v in self.info.items() if isinstance(v, int | float | str)},
        }

    # --- persistence --------------------------------------------------------------------------
    def save_files(self, path: Path) -> None:
        np.savez(path / _DETECTOR_FILE, **self.detector.to_arrays())
        np.savez(path / _SMOKE_FILE, clips=self.smoke_clips.astype(np.int16))
        meta = {
            "config": self.config.as_dict(),
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "info": self.info,
        }
        (path / _CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load_files(cls, path: Path) -> AcousticBundle:
        meta = json.loads((path / _CONFIG_FILE).read_text())
        with np.load(path / _DETECTOR_FILE, allow_pickle=False) as arrays:
            detector = Detector.from_arrays(dict(arrays))
        with np.load(path / _SMOKE_FILE, allow_pickle=False) as smoke:
            clips = smoke["clips"]
        config = FeatureConfig.from_dict(meta["config"])
        width = len(config.stats) * config.stat_bands
        if detector.mean.shape[0] != width or clips.dtype != np.int16 or clips.ndim != 2:
            raise ModelError(f"{path}: detector / smoke clips do not match the feature settings")
        return cls(
            config=config,
            detector=detector,
            threshold=float(meta["threshold"]),
            target_fpr=float(meta["target_fpr"]),
            smoke_clips=clips,
            info=dict(meta.get("info", {})),
        )
