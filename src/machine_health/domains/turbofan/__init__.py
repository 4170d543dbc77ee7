"""Turbofan domain: remaining useful life from NASA C-MAPSS engine cycles.

A request is ONE new cycle of one engine (`TurbofanCycle`); the service appends it to the unit's
archived history (after `check_next_cycle`) and scores the history with a `TurbofanBundle`,
whose window holds the unit's last cycles.

Modules: `data` (loading, targets, unit split, cycle order), `features` (regimes, flat sensors,
scaling, windows), `models` (scikit-learn and Keras builders), `bundle` (the model artifact),
`metrics` (RMSE, PHM08 score...), `training` (train, evaluate, benchmark, register).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator

from machine_health.domains.base import Domain
from machine_health.domains.turbofan.bundle import HistoryRow, TurbofanBundle
from machine_health.domains.turbofan.data import (
    COLUMNS,
    SENSORS,
    SETTINGS,
    check_next_cycle,
    find_file,
    load_subset,
    read_history,
    resolve_cmapss_dir,
    rul_targets,
    split_units,
)
from machine_health.domains.turbofan.metrics import phm08_score, rul_metrics

N_SETTINGS, N_SENSORS = len(SETTINGS), len(SENSORS)


def _finite(values: list[float], what: str) -> list[float]:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} must be finite numbers (NaN/inf at positions {bad})")
    return values


class TurbofanCycle(BaseModel):
    """One engine cycle: unit id, cycle number, 3 operating settings and 21 sensor readings."""

    unit_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["FD001-1"]
    )
    cycle: int = Field(ge=1, description="Cycle number; strictly increasing per unit.")
    settings: list[float] = Field(min_length=N_SETTINGS, max_length=N_SETTINGS)
    sensors: list[float] = Field(min_length=N_SENSORS, max_length=N_SENSORS)

    @field_validator("settings")
    @classmethod
    def _settings_finite(cls, value: list[float]) -> list[float]:
        return _finite(value, "settings")

    @field_validator("sensors")
    @classmethod
    def _sensors_finite(cls, value: list[float]) -> list[float]:
        return _finite(value, "sensors")

    def as_row(self) -> HistoryRow:
        """This cycle as a history row (the columns `TurbofanBundle.predict` reads)."""
        return HistoryRow({
            "unit": self.unit_id,
            "cycle": self.cycle,
            **dict(zip(SETTINGS, self.settings, strict=True)),
            **dict(zip(SENSORS, self.sensors, strict=True)),
        })  # fmt: skip


class RulPrediction(BaseModel):
    """Remaining useful life of the scored cycle."""

    rul: float = Field(ge=0, description="Predicted remaining cycles before failure.")
    cycles_in_window: int = Field(ge=1, description="Known cycles used (<= the model window).")
    regime: int | None = Field(None, description="Operating regime of the cycle (0-based).")


class TurbofanDomain(Domain):
    name: ClassVar[str] = "turbofan"
    input_model: ClassVar[type[BaseModel]] = TurbofanCycle
    output_model: ClassVar[type[BaseModel]] = RulPrediction
    primary_metrics: ClassVar[dict[str, Literal["min", "max"]]] = {
        "rmse": "min",
        "phm_score": "min",
    }

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


DOMAIN = TurbofanDomain()

__all__ = [
    "COLUMNS",
    "DOMAIN",
    "RulPrediction",
    "TurbofanBundle",
    "TurbofanCycle",
    "TurbofanDomain",
    "check_next_cycle",
    "load_subset",
    "phm08_score",
    "rul_metrics",
    "rul_targets",
    "split_units",
]
