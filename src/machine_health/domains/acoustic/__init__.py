"""Machine sounds (microphone clips, DCASE 2023 valve) -> anomaly score + alarm.

Public API (what the API, the pipeline and the benchmark call):

- data: `load_clips(data_dir, parts=..., labels=..., domains=...)` -> `ClipSet` (the fixed
  split by clip index, `split_part`), `read_manifest`, `resolve_dataset_dir`.
- features: `FeatureConfig`, `log_mel`, `clip_stats`, `stat_names`, `reduce_bands`.
- training: `prepare(clips)` -> `Prepared` (spectrograms once), `train_bundle(prepared, seed=)`
  -> `(AcousticBundle, AcousticTrainingResult)`, `evaluate_bundle(bundle, prepared, part)`,
  `evaluate_scores`, `conformal_threshold`.
- audio: `wav_base64(samples, rate)` (what a client posts), `decode_wav`.
- domain: `DOMAIN` (`AcousticDomain`, whose pipeline, monitoring and demo methods delegate to
  `retrain`, `monitoring` and `demo`), `AcousticInput`, `AcousticOutput`, and the helpers a
  `Domain` wrapper calls: `training_set(data_dir)`, `evaluation_set(data_dir)`,
  `all_clips(data_dir)`, `PRIMARY_METRICS`, `clip_drift_features(spectra)`,
  `archived_form(item)` / `spectrogram_from_archive(record)`, `item_spectrogram(item)` (the
  UI's picture).
- `retrain` (the pipeline steps' part), `monitoring` (drift, projection, live performance),
  `demo` (the demo's traffic), `workflow` (train-and-register, evaluate), `commands` and `ui`
  (light: the CLI and the UI).

This file stays light (the UI imports the package for `ui`, and the UI image has no
scikit-learn): the names below are imported from their module on first use.
"""

from __future__ import annotations

from machine_health.domains.lazy import lazy_exports

_EXPORTS = {
    "decode_wav": "audio",
    "encode_wav": "audio",
    "wav_base64": "audio",
    "AcousticBundle": "bundle",
    "ANOMALY": "data",
    "NORMAL": "data",
    "Clip": "data",
    "ClipSet": "data",
    "load_clips": "data",
    "read_manifest": "data",
    "resolve_dataset_dir": "data",
    "split_part": "data",
    "DOMAIN": "domain",
    "PRIMARY_METRICS": "domain",
    "AcousticDomain": "domain",
    "AcousticInput": "domain",
    "AcousticOutput": "domain",
    "all_clips": "domain",
    "archived_form": "domain",
    "clip_drift_features": "domain",
    "evaluation_set": "domain",
    "item_spectrogram": "domain",
    "spectrogram_from_archive": "domain",
    "training_set": "domain",
    "FeatureConfig": "features",
    "clip_stats": "features",
    "log_mel": "features",
    "reduce_bands": "features",
    "stat_names": "features",
    "Detector": "model",
    "fit_detector": "model",
    "AcousticTrainingResult": "training",
    "Prepared": "training",
    "evaluate_bundle": "training",
    "evaluate_scores": "training",
    "prepare": "training",
    "train_bundle": "training",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
