"""The vibration / acoustic domain: request and answer schemas, and its `Domain` object.

The pipeline methods are the functions of `retrain`, `reference` and `monitoring` (its
`parts`, see `domains.base.PART_FUNCTIONS`); the other monitoring and demo methods call
`monitoring` and `demo`. All are imported when called: they need scikit-learn, pyarrow or MLflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from machine_health.config import Settings
from machine_health.domains.base import (
    Domain,
    EvaluationSet,
    LabelMode,
    ModelBundle,
    Reference,
)
from machine_health.domains.vibration.data import (
    load_manifest,
    make_windows,
    resolve_manifest_dir,
)
from machine_health.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from rich.progress import Progress

    from machine_health.simulate import ReplayOptions, Tally

#: physical bounds of a request (not deployment knobs): accelerometers and microphones of
#: motor test benches sample between 1 and 200 kHz; motors turn between 60 and 30,000 rpm.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000.0, 200_000.0
MIN_RPM, MAX_RPM = 60.0, 30_000.0
EXAMPLE_WINDOW = 2048
#: a waveform is archived as float32 (archive/records.py): a larger magnitude would be stored
#: as infinity, so the request is refused instead (no sensor reads 3.4e38 of anything).
FLOAT32_MAX = float(np.finfo(np.float32).max)


@lru_cache(maxsize=1)
def request_size_limits() -> tuple[int, int]:
    """(min, max) samples of one request, from the MH_VIBRATION_* settings (read once).

    Read with env forced to dev: the size limits must not depend on the secrets being set.
    """
    settings = Settings(env="dev")
    return settings.vibration_min_samples, settings.vibration_max_samples


def _samples_schema(schema: dict[str, Any]) -> None:
    """The OpenAPI schema says what the validator checks: the length, float32 magnitudes."""
    schema["minItems"], schema["maxItems"] = request_size_limits()
    schema["items"] = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}


#: a JSON number, never a string or a boolean that pydantic's lax mode would convert
Number = Annotated[float, Strict()]


class VibrationInput(BaseModel):
    """One waveform window of one asset, from an accelerometer or a microphone."""

    model_config = ConfigDict(extra="forbid")

    asset_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    samples: list[Number] = Field(
        json_schema_extra=_samples_schema,
        description="The waveform (any unit: g for accelerometers, Pa or normalised for "
        "microphones); length within the configured vibration_min/max_samples; finite values "
        "a float32 can hold (|x| <= 3.4e38), the precision they are archived at.",
    )
    sample_rate: Number = Field(
        ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE, description="Sample rate of `samples` in Hz."
    )
    rpm: Number | None = Field(
        None,
        ge=MIN_RPM,
        le=MAX_RPM,
        description="Shaft speed; places the bearing defect frequencies (training rpm if unset).",
    )
    channel: Literal["accelerometer", "microphone"] = "accelerometer"

    @field_validator("samples")
    @classmethod
    def _finite_and_sized(cls, samples: list[float]) -> list[float]:
        low, high = request_size_limits()
        if not low <= len(samples) <= high:
            raise ValueError(f"samples must hold {low}..{high} values, got {len(samples)}")
        values = np.asarray(samples, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"samples must be finite numbers: {samples[bad[0]]} at index {bad[0]} "
                f"({bad.size} non-finite values)"
            )
        bad = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
        if bad.size:
            raise ValueError(
                f"samples must fit in float32 (|x| <= {FLOAT32_MAX:.7g}): {samples[bad[0]]:g} "
                f"at index {bad[0]} ({bad.size} such values)"
            )
        return samples


class VibrationOutput(BaseModel):
    """The answer for one window."""

    anomaly_score: float = Field(description="Distance to normal operation (higher = stranger).")
    is_anomaly: bool = Field(description="anomaly_score > threshold.")
    threshold: float = Field(description="Set on held-out normal windows at the target FPR.")
    fault_class: str = Field(description="Most probable class (normal, inner_race, ...).")
    probabilities: dict[str, float] = Field(description="Probability of every class.")


class VibrationDomain(Domain):
    """Motor vibration / acoustic windows -> anomaly score and bearing fault class."""

    name: ClassVar[str] = "vibration"
    input_model: ClassVar[type[BaseModel]] = VibrationInput
    output_model: ClassVar[type[BaseModel]] = VibrationOutput
    primary_metrics: ClassVar[dict[str, Literal["min", "max"]]] = {
        "recall_at_fpr": "max",
        "macro_f1": "max",
    }
    label_mode: ClassVar[LabelMode] = "feedback"
    min_labelled: ClassVar[int] = 20  # labelled windows
    live_columns: ClassVar[tuple[str, ...]] = (
        "n_predictions", "precision", "recall", "false_alarm_rate", "macro_f1",
    )  # fmt: skip

    def example_input(self, data_dir: Path, label: str = "inner_race") -> dict[str, Any]:
        """The first 2048-sample window of the test portion of a real `label` recording."""
        directory = resolve_manifest_dir(data_dir)
        recordings = load_manifest(directory, labels={label})
        if not recordings:
            raise DataError(f"{directory}: no {label!r} recording for an example input")
        rec = recordings[0]
        windows = make_windows(
            [rec],
            portion="test",
            window=EXAMPLE_WINDOW,
            hop=EXAMPLE_WINDOW,
            sample_rate=rec.sample_rate,
        )
        return {
            "asset_id": f"cwru-{Path(rec.file).stem}"[:64].replace("@", "-"),
            "samples": [round(float(v), 6) for v in windows.windows[0]],
            "sample_rate": rec.sample_rate,
            "rpm": rec.rpm,
            "channel": rec.channel,
        }

    # --- the modules of the delegated methods (`domains.base.PART_FUNCTIONS`) ---------------
    parts: ClassVar[Mapping[str, str]] = {
        "retrain": "machine_health.domains.vibration.retrain",
        "reference": "machine_health.domains.vibration.reference",
        "monitoring": "machine_health.domains.vibration.monitoring",
    }

    reference_rule: ClassVar[str] = (
        "the last 1/7 of every CWRU recording's training portion (never fitted), by recording"
    )

    def score(self, bundle: ModelBundle, evaluation: EvaluationSet) -> dict[str, float]:
        from machine_health.domains.vibration.training import evaluate_bundle, flat_metrics

        return flat_metrics(evaluate_bundle(bundle, evaluation.data))  # type: ignore[arg-type]

    # --- monitoring (domains/vibration/monitoring.py) ---------------------------------------
    def drift_features(
        self, records: Sequence[Mapping[str, Any]], reference: Reference
    ) -> tuple[pd.DataFrame, list[str] | None]:
        from machine_health.domains.vibration import monitoring

        config = monitoring.feature_config(reference.meta)
        return monitoring.features_from_records(records, config), None

    def live_performance(
        self, records: Sequence[Mapping[str, Any]], settings: Settings
    ) -> dict[str, dict[str, Any]]:
        from machine_health.domains.vibration.monitoring import live_performance

        return live_performance(records, min_predictions=self.min_labelled)

    def degraded(self, metrics: Mapping[str, Any], settings: Settings) -> bool:
        return float(metrics["recall"]) < settings.live_recall_min

    # --- the demo's traffic (domains/vibration/demo.py) -------------------------------------
    async def replay(
        self, client: Any, data_root: Path, options: ReplayOptions, tally: Tally,
        progress: Progress,
    ) -> None:  # fmt: skip
        from machine_health.domains.vibration.demo import replay

        await replay(client, data_root / "cwru", options, tally, progress)


DOMAIN = VibrationDomain()
