"""The turbofan `Domain`: request and answer schemas, their physical ranges, and `DOMAIN`.

A request is ONE new cycle of one engine (`TurbofanCycle`); the service appends it to the unit's
archived history (after `check_next_cycle`) and scores the history with a `TurbofanBundle`,
whose window holds the unit's last cycles. The pipeline methods are
the functions of `retrain`, `reference` and `monitoring` (its `parts`, see
`domains.base.PART_FUNCTIONS`); the other monitoring and demo methods call `monitoring` and
`demo`. All are imported when called: they need scikit-learn or pyarrow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, Strict, ValidationInfo, field_validator

from machine_health.config import Settings
from machine_health.domains.base import (
    Domain,
    EvaluationSet,
    LabelMode,
    ModelBundle,
    Reference,
)
from machine_health.domains.turbofan.data import (
    SENSORS,
    SETTINGS,
    find_file,
    read_history,
    resolve_cmapss_dir,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from rich.progress import Progress

    from machine_health.domains.turbofan.bundle import HistoryRow
    from machine_health.simulate import ReplayOptions, Tally

N_SETTINGS, N_SENSORS = len(SETTINGS), len(SENSORS)
INT64_MAX = 2**63 - 1

# --- physical ranges of a request's values ---------------------------------------------------
# From the C-MAPSS data dictionary (Saxena et al., PHM08, table 2; the settings are altitude,
# Mach number and throttle resolver angle) and the values observed in FD001-FD002 (train and
# test, 121,477 cycles), with a wide margin: these refuse values no engine can produce (1e30,
# a unit typo, an overflow), never a degraded or unusual but real engine. How they are chosen:
# - sensors are physical magnitudes (absolute temperatures in degrees Rankine, absolute
#   pressures, shaft speeds, ratios, flows): never negative, so the low end is 0; the high end
#   is 3x the largest value observed, rounded up (far beyond any real drift or fault);
# - settings: altitude -1..60 kft (observed 0..42; airliners cruise below 45), Mach -0.1..1.5
#   (observed 0..0.84; the C-MAPSS flight envelope is subsonic), throttle resolver angle
#   0..100 degrees (observed 60..100; 100 is full throttle in C-MAPSS).
# Every range lies inside the retrain's validate bounds (pipeline/validate.py: settings within
# +-100, sensors within 0..1e5), so a cycle the API accepts never fails a retrain.
#: (name, meaning, unit, low, high) of setting_1..3, observed min/max in the comments
SETTING_RANGES: tuple[tuple[str, str, str, float, float], ...] = (
    ("altitude", "altitude", "kft", -1.0, 60.0),  # -0.0087 .. 42.008
    ("Mach", "Mach number", "-", -0.1, 1.5),  # -0.0006 .. 0.842
    ("TRA", "throttle resolver angle", "deg", 0.0, 100.0),  # 60 .. 100
)
#: (name, meaning, unit, low, high) of sensor_1..21, observed min/max in the comments
SENSOR_RANGES: tuple[tuple[str, str, str, float, float], ...] = (
    ("T2", "total temperature at fan inlet", "R", 0.0, 1_600.0),  # 445 .. 518.67
    ("T24", "total temperature at LPC outlet", "R", 0.0, 2_000.0),  # 535.41 .. 644.53
    ("T30", "total temperature at HPC outlet", "R", 0.0, 4_900.0),  # 1243.73 .. 1616.91
    ("T50", "total temperature at LPT outlet", "R", 0.0, 4_400.0),  # 1023.77 .. 1441.49
    ("P2", "pressure at fan inlet", "psia", 0.0, 45.0),  # 3.91 .. 14.62
    ("P15", "total pressure in bypass-duct", "psia", 0.0, 65.0),  # 5.71 .. 21.61
    ("P30", "total pressure at HPC outlet", "psia", 0.0, 1_700.0),  # 136.8 .. 556.06
    ("Nf", "physical fan speed", "rpm", 0.0, 7_200.0),  # 1914.77 .. 2388.56
    ("Nc", "physical core speed", "rpm", 0.0, 28_000.0),  # 7985.56 .. 9244.59
    ("epr", "engine pressure ratio (P50/P2)", "-", 0.0, 4.0),  # 0.93 .. 1.3
    ("Ps30", "static pressure at HPC outlet", "psia", 0.0, 150.0),  # 36.18 .. 48.53
    ("phi", "ratio of fuel flow to Ps30", "pps/psi", 0.0, 1_600.0),  # 129.12 .. 523.76
    ("NRf", "corrected fan speed", "rpm", 0.0, 7_200.0),  # 2027.61 .. 2390.48
    ("NRc", "corrected core speed", "rpm", 0.0, 25_000.0),  # 7848.36 .. 8293.72
    ("BPR", "bypass ratio", "-", 0.0, 34.0),  # 8.3249 .. 11.0669
    ("farB", "burner fuel-air ratio", "-", 0.0, 0.09),  # 0.02 .. 0.03
    ("htBleed", "bleed enthalpy", "-", 0.0, 1_200.0),  # 303 .. 400
    ("Nf_dmd", "demanded fan speed", "rpm", 0.0, 7_200.0),  # 1915 .. 2388
    ("PCNfR_dmd", "demanded corrected fan speed", "rpm", 0.0, 300.0),  # 84.93 .. 100
    ("W31", "HPT coolant bleed", "lbm/s", 0.0, 120.0),  # 10.18 .. 39.43
    ("W32", "LPT coolant bleed", "lbm/s", 0.0, 72.0),  # 6.0105 .. 23.6419
)


@lru_cache(maxsize=1)
def max_cycle() -> int:
    """The largest cycle a request may carry (MH_TURBOFAN_MAX_CYCLE, read once).

    Read with env forced to dev: the input bounds must not depend on the secrets being set.
    """
    return Settings(env="dev").turbofan_max_cycle


def _cycle_schema(schema: dict[str, Any]) -> None:
    """The OpenAPI schema says the bound the validator applies (MH_TURBOFAN_MAX_CYCLE)."""
    schema["maximum"] = max_cycle()


def _ranges_schema(
    ranges: tuple[tuple[str, str, str, float, float], ...],
) -> Any:
    """The OpenAPI schema of a vector: each position's physical range, as the validator checks."""

    def extra(schema: dict[str, Any]) -> None:
        schema["prefixItems"] = [
            {"type": "number", "minimum": low, "maximum": high,
             "description": f"{name}: {meaning} ({unit})"}
            for name, meaning, unit, low, high in ranges
        ]  # fmt: skip

    return extra


#: a JSON number, never a string or a boolean that pydantic's lax mode would convert
Number = Annotated[float, Strict()]


def _json_integer(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer (a JSON number, not a string or a boolean)")
    return value  # 2251.0 is an integer to JSON Schema: int() takes it, 2251.5 is refused


#: a JSON integer: an int or a number without a fraction, never a string or a boolean
JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


def _archived(info: ValidationInfo) -> bool:
    """Re-validating an archived cycle (the serving context): its values were accepted under
    the bounds of their day; only their shape and finiteness are checked again."""
    return bool(info.context and info.context.get("archived"))


def _finite(values: list[float], what: str) -> list[float]:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} must be finite numbers (NaN/inf at positions {bad})")
    return values


def _in_ranges(
    values: list[float], what: str, ranges: tuple[tuple[str, str, str, float, float], ...]
) -> list[float]:
    for index, (value, (name, meaning, unit, low, high)) in enumerate(
        zip(values, ranges, strict=True)
    ):
        if not low <= value <= high:
            raise ValueError(
                f"{what}[{index}] ({name}, {meaning}, {unit}) = {value:g} is outside its "
                f"physical range [{low:g}, {high:g}]"
            )
    return values


class TurbofanCycle(BaseModel):
    """One engine cycle: unit id, cycle number, 3 operating settings and 21 sensor readings."""

    unit_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["FD001-1"]
    )
    cycle: JsonInteger = Field(
        ge=1,
        le=INT64_MAX,
        json_schema_extra=_cycle_schema,
        description="Cycle number; strictly increasing per unit, at most MH_TURBOFAN_MAX_CYCLE "
        "and at most MH_MAX_CYCLE_JUMP after the unit's last known cycle.",
    )
    settings: list[Number] = Field(
        min_length=N_SETTINGS,
        max_length=N_SETTINGS,
        json_schema_extra=_ranges_schema(SETTING_RANGES),
        description="Altitude (kft), Mach number, throttle resolver angle (deg), each within "
        "its physical range (`SETTING_RANGES`).",
    )
    sensors: list[Number] = Field(
        min_length=N_SENSORS,
        max_length=N_SENSORS,
        json_schema_extra=_ranges_schema(SENSOR_RANGES),
        description="The 21 C-MAPSS sensors, each within its physical range (`SENSOR_RANGES`).",
    )

    @field_validator("cycle")
    @classmethod
    def _cycle_plausible(cls, value: int, info: ValidationInfo) -> int:
        if not _archived(info) and value > max_cycle():
            raise ValueError(
                f"cycle {value} is beyond the plausible maximum {max_cycle()} "
                "(MH_TURBOFAN_MAX_CYCLE)"
            )
        return value

    @field_validator("settings")
    @classmethod
    def _settings_finite(cls, value: list[float], info: ValidationInfo) -> list[float]:
        value = _finite(value, "settings")
        return value if _archived(info) else _in_ranges(value, "settings", SETTING_RANGES)

    @field_validator("sensors")
    @classmethod
    def _sensors_finite(cls, value: list[float], info: ValidationInfo) -> list[float]:
        value = _finite(value, "sensors")
        return value if _archived(info) else _in_ranges(value, "sensors", SENSOR_RANGES)

    def as_row(self) -> HistoryRow:
        """This cycle as a history row (the columns `TurbofanBundle.predict` reads)."""
        from machine_health.domains.turbofan.bundle import HistoryRow

        return HistoryRow({
            "unit": self.unit_id,
            "cycle": self.cycle,
            **dict(zip(SETTINGS, self.settings, strict=True)),
            **dict(zip(SENSORS, self.sensors, strict=True)),
        })  # fmt: skip


class Novelty(BaseModel):
    """Whether the scored window is outside what the model was trained on (its RUL is still
    given, but extrapolated): thresholds fitted on the training rows, `features` module doc."""

    novel: bool = Field(
        description="True when `score` > 1: a cycle of the window is outside every known "
        "operating regime, or a sensor is outside its training range."
    )
    score: float = Field(
        ge=0, description="Largest distance beyond what training showed, relative to its "
        "threshold (<= 1: known ground)."
    )  # fmt: skip
    reasons: list[str] = Field(
        default_factory=list, description="What was outside, and at how many of the window's "
        "cycles (empty when not novel)."
    )  # fmt: skip


class RulPrediction(BaseModel):
    """Remaining useful life of the scored cycle."""

    rul: float = Field(ge=0, description="Predicted remaining cycles before failure.")
    cycles_in_window: int = Field(ge=1, description="Known cycles used (<= the model window).")
    regime: int | None = Field(None, description="Operating regime of the cycle (0-based).")
    novelty: Novelty | None = Field(
        None, description="Novelty of the unit's window; absent from the answers of models "
        "trained before novelty thresholds were fitted."
    )  # fmt: skip


class TurbofanDomain(Domain):
    """NASA C-MAPSS engines: one cycle per request -> remaining useful life."""

    name: ClassVar[str] = "turbofan"
    input_model: ClassVar[type[BaseModel]] = TurbofanCycle
    output_model: ClassVar[type[BaseModel]] = RulPrediction
    primary_metrics: ClassVar[dict[str, Literal["min", "max"]]] = {
        "rmse": "min",
        "phm_score": "min",
    }
    label_mode: ClassVar[LabelMode] = "failure_backfill"
    min_labelled: ClassVar[int] = 5  # units whose failure is known
    live_columns: ClassVar[tuple[str, ...]] = ("n_units", "rmse", "phm08", "rmse_all_cycles")

    def example_input(self, data_dir: Path) -> dict[str, Any]:
        """The first row of test_FD001 as a request body."""
        frame = read_history(find_file(resolve_cmapss_dir(data_dir), "test_FD001"))
        row = frame.iloc[0]
        return {
            "unit_id": f"FD001-{int(row['unit'])}",
            "cycle": int(row["cycle"]),
            "settings": [float(row[c]) for c in SETTINGS],
            "sensors": [float(row[c]) for c in SENSORS],
        }

    # --- the modules of the delegated methods (`domains.base.PART_FUNCTIONS`) ---------------
    parts: ClassVar[Mapping[str, str]] = {
        "retrain": "machine_health.domains.turbofan.retrain",
        "reference": "machine_health.domains.turbofan.reference",
        "monitoring": "machine_health.domains.turbofan.monitoring",
    }

    reference_rule: ClassVar[str] = (
        "FD001 training units with id divisible by 5 (never fitted); test-like cuts per unit"
    )

    def field_holdout(self, table: pa.Table) -> np.ndarray:
        return self.part("retrain").field_holdout(table)

    def score(self, bundle: ModelBundle, evaluation: EvaluationSet) -> dict[str, float]:
        from machine_health.domains.turbofan.training import evaluate_bundle

        test, rul = evaluation.data
        return evaluate_bundle(bundle, test, rul)  # type: ignore[arg-type]

    # --- monitoring (domains/turbofan/monitoring.py) ----------------------------------------
    def drift_features(
        self, records: Sequence[Mapping[str, Any]], reference: Reference
    ) -> tuple[pd.DataFrame, list[str] | None]:
        from machine_health.domains.turbofan.monitoring import inputs_from_records

        return inputs_from_records(records)

    def live_performance(
        self, records: Sequence[Mapping[str, Any]], settings: Settings
    ) -> dict[str, dict[str, Any]]:
        from machine_health.domains.turbofan.monitoring import live_performance

        return live_performance(records, rul_cap=settings.rul_cap, min_units=self.min_labelled)

    def degraded(self, metrics: Mapping[str, Any], settings: Settings) -> bool:
        return float(metrics["rmse"]) > settings.live_rmse_max

    # --- the demo's traffic (domains/turbofan/demo.py) --------------------------------------
    async def replay(
        self, client: Any, data_root: Path, options: ReplayOptions, tally: Tally,
        progress: Progress,
    ) -> None:  # fmt: skip
        from machine_health.domains.turbofan.demo import replay

        await replay(client, data_root / "cmapss", options, tally, progress)


DOMAIN = TurbofanDomain()
