"""The acoustic domain: request and answer schemas, its `Domain` object, and the thin helpers
the service, the pipeline and the UI call (training / evaluation sets, drift features, the
archived form of a clip, a spectrogram to display).

Request form: `audio` = base64 of a WAV file (mono, 16-bit PCM, 8-48 kHz, 5-12 s), what a
microphone client already has; the header states the rate, 16-bit PCM makes every sample
finite and in range by construction. Archived per prediction: NOT the audio (320 kB for 10 s)
but a 32-band log-mel spectrogram as float16 (~27 kB in base64) and the clip's sha256, enough
to recompute the detector's statistics for drift monitoring and retraining.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from machine_health.domains.acoustic.audio import (
    MAX_BASE64_CHARS,
    MAX_SAMPLE_RATE,
    MAX_SECONDS,
    MIN_SAMPLE_RATE,
    MIN_SECONDS,
    b64decode_strict,
    decode_wav,
    to_model_rate,
)
from machine_health.domains.acoustic.data import PARTS, load_clips, resolve_dataset_dir
from machine_health.domains.acoustic.features import (
    FeatureConfig,
    clip_stats,
    log_mel,
    reduce_bands,
    stat_names,
)
from machine_health.domains.base import (
    Domain,
    EvaluationSet,
    LabelMode,
    ModelBundle,
    Reference,
)
from machine_health.errors import DataError, InputError

if TYPE_CHECKING:  # scikit-learn (training) is imported by the methods that train or score
    import pandas as pd
    from rich.progress import Progress

    from machine_health.config import Settings
    from machine_health.domains.acoustic.training import Prepared
    from machine_health.simulate import ReplayOptions, Tally

#: the metrics the retraining gate compares: the challenge's official score (harmonic mean of
#: AUC source, AUC target, pooled pAUC) and the target-domain AUC (the domain shift the
#: challenge is about); both higher-is-better.
PRIMARY_METRICS: dict[str, Literal["min", "max"]] = {"official_score": "max", "auc_target": "max"}
#: the smallest valid WAV: 5 s at 8 kHz, 16-bit, with its 44-byte header, in base64.
MIN_BASE64_CHARS = 4 * math.ceil((int(MIN_SECONDS * MIN_SAMPLE_RATE * 2) + 44) / 3)
#: the archived spectrogram's resolution (model-independent, so any later model can read it)
ARCHIVE_BANDS = 32
#: drift features: all four statistics on 8 band groups (32 named columns)
DRIFT_CONFIG = FeatureConfig(stat_bands=8, stats=("mean", "std", "p95", "delta"))


class AcousticInput(BaseModel):
    """One sound clip of one asset, recorded by a microphone."""

    model_config = ConfigDict(extra="forbid")

    asset_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    audio: str = Field(
        min_length=MIN_BASE64_CHARS,
        max_length=MAX_BASE64_CHARS,
        description=f"Base64 (standard alphabet, padded, no line breaks) of a WAV file: mono, "
        f"16-bit PCM, {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz (resampled down to the model's "
        f"rate; below it refused), {MIN_SECONDS:g}-{MAX_SECONDS:g} s.",
    )
    _decoded: tuple[np.ndarray, int] | None = PrivateAttr(default=None)

    @field_validator("audio")
    @classmethod
    def _valid_wav(cls, audio: str) -> str:
        try:
            decode_wav(b64decode_strict(audio))
        except InputError as exc:  # pydantic reports ValueError as a 422 naming the field
            raise ValueError(str(exc)) from exc
        return audio

    _spectra: dict[tuple[int, int, int, int], np.ndarray] = PrivateAttr(default_factory=dict)

    def decoded(self) -> tuple[np.ndarray, int]:
        """(float32 samples in [-1, 1), rate), decoded once per request."""
        if self._decoded is None:
            self._decoded = decode_wav(b64decode_strict(self.audio))
        return self._decoded

    def spectrogram(self, config: FeatureConfig) -> np.ndarray:
        """Log-mel `(frames, n_mels)` at `config`'s rate, computed once per request and frame
        settings: the model's score and the archived form read the same one."""
        key = (config.sample_rate, config.n_fft, config.hop, config.n_mels)
        if key not in self._spectra:
            samples, rate = self.decoded()
            at_rate = to_model_rate(samples, rate, config.sample_rate)
            self._spectra[key] = log_mel(at_rate[None], config)[0]
        return self._spectra[key]


class AcousticOutput(BaseModel):
    """The answer for one clip."""

    anomaly_score: float = Field(description="Distance to normal operation (higher = stranger).")
    is_anomaly: bool = Field(description="anomaly_score > threshold.")
    threshold: float = Field(description="Set on held-out normal clips at the target FPR.")
    seconds: float = Field(description="Duration of the scored clip.")


class AcousticDomain(Domain):
    """Machine-sound clips -> anomaly score and alarm (DCASE 2023 valve)."""

    name: ClassVar[str] = "acoustic"
    input_model: ClassVar[type[BaseModel]] = AcousticInput
    output_model: ClassVar[type[BaseModel]] = AcousticOutput
    primary_metrics: ClassVar[dict[str, Literal["min", "max"]]] = PRIMARY_METRICS
    #: an operator who inspected the valve posts the label of ONE prediction
    label_mode: ClassVar[LabelMode] = "feedback"
    #: labelled clips before live performance is judged (20: ~10 of each class at the data's
    #: balance)
    min_labelled: ClassVar[int] = 20
    live_columns: ClassVar[tuple[str, ...]] = (
        "n_labelled", "recall", "false_alarm_rate", "precision", "auc",
    )  # fmt: skip

    def example_input(
        self, data_dir: Path, label: str = "anomaly", domain: str = "source"
    ) -> dict[str, Any]:
        """The first test clip of `label` in `domain`, its WAV file's bytes as they are."""
        directory = resolve_dataset_dir(data_dir)
        clips = load_clips(directory, parts=("test",), labels=(label,), domains=(domain,),
                           limit_per_group=1)  # fmt: skip
        if not clips.clips:
            raise DataError(f"{directory}: no {label!r} test clip in {domain!r}")
        clip = clips.clips[0]
        audio = base64.b64encode((directory / clip.file).read_bytes()).decode("ascii")
        return {"asset_id": f"dcase-valve-{Path(clip.file).stem}"[:64], "audio": audio}

    # --- the archive: the log-mel form, not the audio ------------------------------------
    def archived_input(self, item: BaseModel) -> dict[str, Any]:
        """`archived_form` (~27 kB for 10 s instead of ~430 kB of base64 audio) + asset id."""
        return {"asset_id": item.asset_id, **archived_form(item)}  # type: ignore[attr-defined]

    # --- the modules of the delegated methods (`domains.base.PART_FUNCTIONS`) ---------------
    parts: ClassVar[Mapping[str, str]] = {
        "retrain": "machine_health.domains.acoustic.retrain",
        "reference": "machine_health.domains.acoustic.reference",
        "monitoring": "machine_health.domains.acoustic.monitoring",
    }

    reference_rule: ClassVar[str] = (
        "the data set's validation clips (detector fitted on train normals only), by clip"
    )

    def score(self, bundle: ModelBundle, evaluation: EvaluationSet) -> dict[str, float]:
        from machine_health.domains.acoustic.training import evaluate_bundle

        return evaluate_bundle(bundle, evaluation.data)  # type: ignore[arg-type]

    # --- monitoring (domains/acoustic/monitoring.py) ----------------------------------------
    def drift_features(
        self, records: Sequence[Mapping[str, Any]], reference: Reference
    ) -> tuple[pd.DataFrame, list[str] | None]:
        from machine_health.domains.acoustic.monitoring import features_from_records

        return features_from_records(records), None

    def live_performance(
        self, records: Sequence[Mapping[str, Any]], settings: Settings
    ) -> dict[str, dict[str, Any]]:
        from machine_health.domains.acoustic.monitoring import live_performance

        return live_performance(records, min_labelled=self.min_labelled)

    def degraded(self, metrics: Mapping[str, Any], settings: Settings) -> bool:
        from machine_health.domains.acoustic.monitoring import degraded

        return degraded(metrics)

    # --- the demo's traffic (domains/acoustic/demo.py) --------------------------------------
    async def replay(
        self, client: Any, data_root: Path, options: ReplayOptions, tally: Tally,
        progress: Progress,
    ) -> None:  # fmt: skip
        from machine_health.domains.acoustic.demo import replay

        await replay(client, data_root, options, tally, progress)


DOMAIN = AcousticDomain()


# --- what the pipeline / monitoring / UI wrappers call ------------------------------------------
def training_set(data_dir: Path) -> Prepared:
    """Clips a retraining reads: the `train` (fit) and `validation` (threshold) parts."""
    from machine_health.domains.acoustic.training import prepare

    return prepare(load_clips(data_dir, parts=("train", "validation")))


def evaluation_set(data_dir: Path) -> Prepared:
    """The `test` part: normal clips never fitted nor used for the threshold, and anomalies."""
    from machine_health.domains.acoustic.training import prepare

    return prepare(load_clips(data_dir, parts=("test",)))


def all_clips(data_dir: Path) -> Prepared:
    """Every clip with its part (benchmarks)."""
    from machine_health.domains.acoustic.training import prepare

    return prepare(load_clips(data_dir, parts=PARTS))


def item_spectrogram(
    item: AcousticInput | dict[str, Any], config: FeatureConfig | None = None
) -> np.ndarray:
    """Log-mel `(frames, n_mels)` of one request item at the model rate (the archived form and
    the UI's picture; the UI finds the band centres with `ui.band_centres`)."""
    config = config or FeatureConfig()
    if isinstance(item, AcousticInput):
        return item.spectrogram(config)
    samples, rate = decode_wav(b64decode_strict(item["audio"]))
    return log_mel(to_model_rate(samples, rate, config.sample_rate)[None], config)[0]


def archived_form(item: AcousticInput | dict[str, Any]) -> dict[str, Any]:
    """What to archive for one clip instead of its audio (~27 kB for 10 s)."""
    audio = item.audio if isinstance(item, AcousticInput) else item["audio"]
    spectrum = item_spectrogram(item)
    compact = reduce_bands(spectrum[None], ARCHIVE_BANDS)[0].astype("<f2")
    return {
        "sha256": hashlib.sha256(audio.encode("ascii")).hexdigest(),
        "log_mel_bands": ARCHIVE_BANDS,
        "log_mel_frames": int(compact.shape[0]),
        "log_mel_f16_base64": base64.b64encode(compact.tobytes()).decode("ascii"),
    }


def spectrogram_from_archive(record: dict[str, Any]) -> np.ndarray:
    """The `(frames, 32)` log-mel of an `archived_form` record (for drift / retraining)."""
    raw = base64.b64decode(record["log_mel_f16_base64"], validate=True)
    frames, bands = int(record["log_mel_frames"]), int(record["log_mel_bands"])
    return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(frames, bands)


def clip_drift_features(spectra: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Named per-clip statistics for drift tests (KS / PSI): `(n, 32)` and the column names.
    Reads full or archived (32-band) spectrograms alike."""
    return clip_stats(np.asarray(spectra), DRIFT_CONFIG), stat_names(DRIFT_CONFIG)
