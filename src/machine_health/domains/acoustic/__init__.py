"""Machine sounds (microphone clips, DCASE 2023 valve) -> anomaly score + alarm.

Public API (what the API, the pipeline and the benchmark call):

- data: `load_clips(data_dir, parts=..., labels=..., domains=...)` -> `ClipSet` (the fixed
  split by clip index, `split_part`), `read_manifest`, `resolve_dataset_dir`.
- features: `FeatureConfig`, `log_mel`, `clip_stats`, `stat_names`, `reduce_bands`.
- training: `prepare(clips)` -> `Prepared` (spectrograms once), `train_bundle(prepared, seed=)`
  -> `(AcousticBundle, AcousticTrainingResult)`, `evaluate_bundle(bundle, prepared, part)`,
  `evaluate_scores`, `conformal_threshold`.
- audio: `wav_base64(samples, rate)` (what a client posts), `decode_wav`.
- domain: `DOMAIN` (`AcousticDomain`: the retraining methods wrap these functions; the
  monitoring / snapshot / replay methods of the redesigned interface raise NotImplementedError
  until the domain is registered), `AcousticInput`, `AcousticOutput`, and the helpers a
  `Domain` wrapper calls: `training_set(data_dir)`, `evaluation_set(data_dir)`,
  `all_clips(data_dir)`, `PRIMARY_METRICS`, `clip_drift_features(spectra)`,
  `archived_form(item)` / `spectrogram_from_archive(record)`, `item_spectrogram(item)` (the
  UI's picture).
"""

from __future__ import annotations

from machine_health.domains.acoustic.audio import decode_wav, encode_wav, wav_base64
from machine_health.domains.acoustic.bundle import AcousticBundle
from machine_health.domains.acoustic.data import (
    ANOMALY,
    NORMAL,
    Clip,
    ClipSet,
    load_clips,
    read_manifest,
    resolve_dataset_dir,
    split_part,
)
from machine_health.domains.acoustic.domain import (
    DOMAIN,
    PRIMARY_METRICS,
    AcousticDomain,
    AcousticInput,
    AcousticOutput,
    all_clips,
    archived_form,
    clip_drift_features,
    evaluation_set,
    item_spectrogram,
    spectrogram_from_archive,
    training_set,
)
from machine_health.domains.acoustic.features import (
    FeatureConfig,
    clip_stats,
    log_mel,
    reduce_bands,
    stat_names,
)
from machine_health.domains.acoustic.model import Detector, fit_detector
from machine_health.domains.acoustic.training import (
    AcousticTrainingResult,
    Prepared,
    evaluate_bundle,
    evaluate_scores,
    prepare,
    train_bundle,
)

__all__ = [
    "ANOMALY",
    "DOMAIN",
    "NORMAL",
    "PRIMARY_METRICS",
    "AcousticBundle",
    "AcousticDomain",
    "AcousticInput",
    "AcousticOutput",
    "AcousticTrainingResult",
    "Clip",
    "ClipSet",
    "Detector",
    "FeatureConfig",
    "Prepared",
    "all_clips",
    "archived_form",
    "clip_drift_features",
    "clip_stats",
    "decode_wav",
    "encode_wav",
    "evaluate_bundle",
    "evaluate_scores",
    "evaluation_set",
    "fit_detector",
    "item_spectrogram",
    "load_clips",
    "log_mel",
    "prepare",
    "read_manifest",
    "reduce_bands",
    "resolve_dataset_dir",
    "spectrogram_from_archive",
    "split_part",
    "stat_names",
    "train_bundle",
    "training_set",
    "wav_base64",
]
