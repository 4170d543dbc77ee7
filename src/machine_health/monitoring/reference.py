"""The training reference every registered model version carries, and the drift features.

A reference is what drift compares live inputs with: per-feature quantiles of the FULL training
inputs (the PSI bins) and an evenly strided sample of them (for the KS test), with the sampling
unit of each sampled row (a turbofan engine; none when every row is an independent draw).
It is one JSON artifact, `drift_reference.json`, of the run that registered the version
(`log_reference` inside `registry.start_run`, `load_reference` by domain and version).

Drift features are the model's INPUTS as the archive holds them, one row per prediction; each
domain defines its own (`Domain.drift_features`, and the reference its training logs, e.g.
`domains/turbofan/monitoring.py`, `domains/vibration/monitoring.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from machine_health.config import Settings
from machine_health.errors import DataError, ModelNotFound

logger = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "drift_reference.json"
REFERENCE_FORMAT = 1
#: quantile levels stored per feature: the deciles are the PSI bins; min and max close them.
QUANTILE_LEVELS = tuple(np.round(np.linspace(0, 1, 11), 2))
DEFAULT_SAMPLE_ROWS = 2_000


@dataclass(frozen=True)
class Reference:
    """Training inputs of one model version, summarised for drift tests."""

    domain: str
    features: list[str]
    quantiles: dict[str, list[float]]
    bins: dict[str, dict[str, list[float]]]  # PSI bins: edges and training share of each bin
    sample: np.ndarray  # (rows, features), evenly strided over the training inputs
    sample_groups: list[str] | None  # sampling unit of each sampled row (None: rows independent)
    n_rows: int
    n_groups: int  # independent units in the FULL training inputs
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "domain": self.domain,
            "features": self.features,
            "quantiles": self.quantiles,
            "bins": self.bins,
            "sample": {f: self.sample[:, j].tolist() for j, f in enumerate(self.features)},
            "sample_groups": self.sample_groups,
            "n_rows": self.n_rows,
            "n_groups": self.n_groups,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        if data.get("format") != REFERENCE_FORMAT:
            raise DataError(f"unsupported drift reference format {data.get('format')!r}")
        features = list(data["features"])
        sample = np.column_stack([np.asarray(data["sample"][f], dtype=float) for f in features])
        return cls(
            domain=str(data["domain"]),
            features=features,
            quantiles={f: [float(v) for v in data["quantiles"][f]] for f in features},
            bins={f: dict(data["bins"][f]) for f in features},
            sample=sample,
            sample_groups=data.get("sample_groups"),
            n_rows=int(data["n_rows"]),
            n_groups=int(data["n_groups"]),
            meta=dict(data.get("meta", {})),
        )


def build_reference(
    domain: str,
    inputs: pd.DataFrame,
    *,
    groups: Sequence[Any] | None = None,
    max_rows: int = DEFAULT_SAMPLE_ROWS,
    meta: Mapping[str, Any] | None = None,
) -> Reference:
    """Summarise training `inputs` (one column per drift feature) into a `Reference`."""
    if inputs.empty:
        raise DataError(f"{domain}: no training inputs to build a drift reference from")
    values = inputs.to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{domain}: training inputs hold NaN or infinite values")
    # Even stride (not random): every unit and every part of a recording stays represented.
    take = np.unique(np.linspace(0, len(values) - 1, min(max_rows, len(values))).astype(int))
    group_values = None if groups is None else np.asarray([str(g) for g in groups])
    return Reference(
        domain=domain,
        features=[str(c) for c in inputs.columns],
        quantiles={
            str(c): np.quantile(values[:, j], QUANTILE_LEVELS).tolist()
            for j, c in enumerate(inputs.columns)
        },
        bins={str(c): psi_bins(values[:, j]) for j, c in enumerate(inputs.columns)},
        sample=values[take],
        sample_groups=None if group_values is None else group_values[take].tolist(),
        n_rows=len(values),
        n_groups=len(values) if group_values is None else len(np.unique(group_values)),
        meta={"created_at": datetime.now(UTC).isoformat(), **(meta or {})},
    )


def psi_bins(values: np.ndarray) -> dict[str, list[float]]:
    """PSI bins of one training feature: its deciles, plus a bin below its minimum and one above
    its maximum (so out-of-range values stand out, and a constant feature still separates
    below / equal / above), with the exact training share of each bin."""
    q = np.quantile(values, QUANTILE_LEVELS)
    edges = np.unique(np.concatenate([q[:-1], [np.nextafter(q[-1], np.inf)]]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / len(values)).tolist()}


def log_reference(reference: Reference) -> None:
    """Attach the reference to the active MLflow run (call inside `registry.start_run`)."""
    from machine_health import registry

    registry.log_dict(reference.to_dict(), REFERENCE_ARTIFACT)
    logger.info(
        "%s drift reference logged: %d rows, %d features",
        reference.domain,
        reference.n_rows,
        len(reference.features),
    )


def load_reference(settings: Settings, domain: str, version: str) -> Reference:
    """The reference of a registered version (ModelNotFound when it was trained without one)."""
    from machine_health import registry

    data = registry.load_run_dict(settings, domain, version, REFERENCE_ARTIFACT)
    if data is None:
        raise ModelNotFound(f"{domain} v{version} carries no {REFERENCE_ARTIFACT}")
    return Reference.from_dict(data)
