"""Input drift: archived inputs of a time window against the serving version's training reference.

Chosen tools: scipy (`stats.ks_2samp`, `stats.kstwobign`, `stats.false_discovery_control`) plus a
ten-line PSI, not Evidently. Evidently is not installed here and would pull a large dependency
tree into the serving image; more importantly its per-column tests treat every row as an
independent draw, which is exactly wrong for turbofan cycles (see below), and we need control of
the effective sample size.

The decision, per feature then per domain:

1. **PSI** (population stability index) on the reference deciles of the FULL training inputs,
   plus one bin below the training minimum and one above the maximum (bin shares floored at
   1e-4). It is the effect size: PSI >= 0.25 is the conventional "major shift".
2. **KS**: the two-sample Kolmogorov-Smirnov statistic D on all rows (it estimates the distance
   between the distributions well), but its p-value is taken at the EFFECTIVE sample size:
   the number of independent sampling units on each side. For turbofan the unit is the engine:
   the ~200 cycles of one engine are one trajectory, not 200 draws, and counting rows would make
   any small difference "significant" (FD001 train vs test: D ~ 0.21 on 13k rows has p < 1e-100,
   with 100 engines a side p ~ 0.02). For vibration each window is a draw (groups = None).
3. **Multiple testing**: Benjamini-Hochberg (false discovery rate, alpha 0.05) over the features.
4. A feature **drifted** when its BH-adjusted KS p-value < alpha AND its PSI >= 0.25: significant
   AND large. Small windows give noisy, upward-biased PSI (its null mean is about
   (bins - 1) * (1/n + 1/m)), which the KS condition guards against; huge windows make tiny
   shifts significant, which the PSI condition guards against.
5. The domain is **flagged** when the share of drifted features reaches `drift_threshold`
   (setting, 0.5 by default: Evidently's dataset-drift default). One broken sensor is a data
   quality alarm, not a reason to retrain; a new operating regime moves most inputs at once.

Measured on the real data (tests/unit/test_drift_real_data.py, figures from `compare`):
- FD001 train vs FD002 train (or test) inputs: 22 of 24 inputs drifted (share 0.92, PSI up to
  12.6, adjusted p ~ 1e-50): flagged.
- FD001 train vs FD001 test: 0 of 24 (smallest adjusted p 0.165). The test engines stop before
  failure, so degradation sensors do shift (PSI up to 0.35); with 100 engines a side that is not
  significant. Counting the test cycles as independent draws, 8 of 24 would pass (share 0.33,
  still under 0.5): the two guards are independent.
- CWRU normal train windows vs fault windows (test portion): 44 of 49 features (0.90): flagged.
- CWRU normal train portion vs normal test portion: 5 of 49 (0.10; a few band energies of the one
  normal recording move slowly over its 5 s): not flagged.

For vibration the report also groups the band features (`log_energy_*`, `share_*`) per spectral
band, so an operator sees WHICH band moved.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from machine_health.archive.client import open_db
from machine_health.archive.predictions import recent_predictions
from machine_health.archive.reports import DRIFT, save
from machine_health.config import Settings
from machine_health.domains import DOMAINS, get_domain
from machine_health.errors import InputError
from machine_health.monitoring.reference import Reference, load_reference

logger = logging.getLogger(__name__)

ALPHA = 0.05
PSI_MIN = 0.25
MIN_ROWS = 20  # fewer archived inputs in the window: report "insufficient_data", never flag
#: newest archived predictions a drift run reads from its window (bounds memory: a vibration
#: window is 8 kB); 5000 rows already resolve a KS distance of ~0.03.
MAX_ROWS = 5_000
_PSI_FLOOR = 1e-4
_BAND = re.compile(r"_(\d+-\d+Hz)$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """'24h', '30m', '7d', '90s', '2w' -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise InputError(f"window {text!r}: use a number and a unit s/m/h/d/w, e.g. 24h")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def psi(bins: Mapping[str, Sequence[float]], current: np.ndarray) -> float:
    """PSI of `current` against a reference feature's bins (`reference.psi_bins`)."""
    edges = np.asarray(bins["edges"], dtype=float)
    expected = np.clip(np.asarray(bins["shares"], dtype=float), _PSI_FLOOR, None)
    counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    observed = np.clip(counts / max(len(current), 1), _PSI_FLOOR, None)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


def ks_test(
    reference: np.ndarray, current: np.ndarray, n_ref: int, n_cur: int
) -> tuple[float, float]:
    """KS statistic on all values, p-value at the effective sample sizes `n_ref`, `n_cur`."""
    result = stats.ks_2samp(reference, current)
    if n_ref >= len(reference) and n_cur >= len(current):
        return float(result.statistic), float(result.pvalue)
    effective = n_ref * n_cur / (n_ref + n_cur)
    return float(result.statistic), float(stats.kstwobign.sf(result.statistic * np.sqrt(effective)))


def compare(
    reference: Reference,
    current: pd.DataFrame,
    current_groups: Sequence[Any] | None = None,
    *,
    threshold: float = 0.5,
    alpha: float = ALPHA,
    psi_min: float = PSI_MIN,
) -> dict[str, Any]:
    """Drift of `current` (same columns as the reference) against `reference` (see module doc)."""
    missing = [f for f in reference.features if f not in current.columns]
    if missing:
        raise InputError(f"current inputs lack reference features {missing}")
    n_rows = len(current)
    n_groups = n_rows if current_groups is None else len(set(map(str, current_groups)))
    base: dict[str, Any] = {
        "domain": reference.domain,
        "n_rows": n_rows,
        "n_groups": n_groups,
        "reference_rows": reference.n_rows,
        "reference_groups": reference.n_groups,
        "alpha": alpha,
        "psi_min": psi_min,
        "threshold": threshold,
        "correction": "benjamini-hochberg",
    }
    if n_rows < MIN_ROWS:
        return {
            **base, "status": "insufficient_data", "features": [], "drifted_features": [],
            "drift_share": 0.0, "flagged": False, "bands": {},
        }  # fmt: skip
    # Effective sizes: independent units when rows are grouped (engines), else the rows.
    n_ref = reference.n_groups if reference.sample_groups is not None else len(reference.sample)
    rows = []
    for j, name in enumerate(reference.features):
        values = current[name].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        d, p = ks_test(reference.sample[:, j], values, n_ref, n_groups)
        rows.append(
            {"feature": name, "psi": psi(reference.bins[name], values), "ks": d, "p_value": p}
        )
    adjusted = stats.false_discovery_control([r["p_value"] for r in rows], method="bh")
    for row, p_adj in zip(rows, adjusted, strict=True):
        row["p_adjusted"] = float(p_adj)
        row["drifted"] = bool(p_adj < alpha and row["psi"] >= psi_min)
    drifted = [r["feature"] for r in rows if r["drifted"]]
    share = len(drifted) / len(rows)
    return {
        **base,
        "status": "ok",
        "features": rows,
        "drifted_features": drifted,
        "drift_share": share,
        "flagged": share >= threshold,
        "bands": _bands(rows),
    }


def _bands(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Band features grouped per spectral band: drifted if any of its features drifted."""
    bands: dict[str, dict[str, Any]] = {}
    for row in rows:
        match = _BAND.search(row["feature"])
        if not match:
            continue
        band = bands.setdefault(match.group(1), {"drifted": False, "psi_max": 0.0, "features": []})
        band["features"].append(row["feature"])
        band["drifted"] = band["drifted"] or row["drifted"]
        band["psi_max"] = max(band["psi_max"], row["psi"])
    return bands


def current_inputs(
    domain: str, records: Sequence[Mapping[str, Any]], reference: Reference
) -> tuple[pd.DataFrame, list[str] | None]:
    """Drift features of archived predictions, comparable with `reference`."""
    if domain not in DOMAINS:
        raise InputError(f"no drift features for domain {domain!r}")
    return get_domain(domain).drift_features(records, reference)


def run_drift(
    settings: Settings,
    domain: str,
    *,
    window: timedelta,
    now: datetime,
    version: str | None = None,
) -> dict[str, Any]:
    """Compare the domain's archived inputs of `[now - window, now)` with the training reference
    of the version that served most of them (or `version`), store the report and return it."""
    start = now - window
    with open_db(settings) as db:
        records = recent_predictions(db, domain, start=start, end=now, limit=MAX_ROWS)
        served = Counter(str(r.get("model_version")) for r in records)
        version = version or (served.most_common(1)[0][0] if served else None)
        if version is None:
            report: dict[str, Any] = {
                "domain": domain, "status": "insufficient_data", "n_rows": 0, "drift_share": 0.0,
                "flagged": False, "features": [], "drifted_features": [], "bands": {},
                "threshold": settings.drift_threshold,
            }  # fmt: skip
        else:
            reference = load_reference(settings, domain, version)
            chosen = [r for r in records if str(r.get("model_version")) == version] or records
            inputs, groups = current_inputs(domain, chosen, reference)
            report = compare(reference, inputs, groups, threshold=settings.drift_threshold)
        report.update(
            model_version=version,
            window_start=start,
            window_end=now,
            served_versions=dict(served),
        )
        save(db, DRIFT, domain, report, created_at=now)
    logger.info(
        "%s drift v%s: %s rows, share %.2f, flagged=%s",
        domain, version, report["n_rows"], report["drift_share"], report["flagged"],
    )  # fmt: skip
    return report
