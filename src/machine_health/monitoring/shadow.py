"""The shadow's field record: its outputs and the champion's answers on the SAME live requests,
judged against the labels that arrived since, with the gate's paired bootstrap.

Every archived prediction scored while a shadow was loaded carries `shadow` (api/shadow.py).
Of the labelled ones whose shadow result is `ok`, the domain makes per-item scores of both
(`Domain.live_item_scores`: units, blocks of an asset's windows, clips as groups), and
`pipeline.evaluate.judge_slice` judges them as the gate judges its field slice: the shadow FAILS
only when it is significantly worse (the one-sided 95 % bound of its loss above 0), fewer than
the gate's minimum of groups is "not enough field data" (not judged). This is the field slice a
shadow's promotion is gated on (`promote_shadow`), and the comparison the live performance
report carries.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from machine_health.archive.client import open_db
from machine_health.archive.predictions import recent_predictions
from machine_health.archive.reports import SHADOW, save
from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.errors import NotFound, PromotionRefused

logger = logging.getLogger(__name__)

#: labelled predictions read per comparison (the newest)
MAX_LABELLED = 200_000


def shadow_versions(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The shadow versions the records carry, the newest record's first."""
    ordered = sorted(records, key=lambda r: str(r.get("created_at")), reverse=True)
    seen: dict[str, None] = {}
    for record in ordered:
        shadow = record.get("shadow") or {}
        if shadow.get("model_version") is not None:
            seen.setdefault(str(shadow["model_version"]), None)
    return list(seen)


def compare_records(
    settings: Settings,
    domain: str,
    records: Sequence[Mapping[str, Any]],
    version: str | None = None,
) -> dict[str, Any] | None:
    """Champion vs shadow `version` (default: the newest shadow) on the labelled `records`
    both scored; None when no record carries a shadow."""
    from machine_health.pipeline.evaluate import judge_slice

    versions = shadow_versions(records)
    if version is None:
        if not versions:
            return None
        version = versions[0]
    tagged = [r for r in records if str((r.get("shadow") or {}).get("model_version")) == version]
    statuses = Counter(str(r["shadow"].get("status")) for r in tagged)
    paired = [r for r in tagged if r["shadow"].get("status") == "ok" and r.get("label") is not None]
    spec = get_domain(domain)
    champion = spec.live_item_scores(paired, [r["output"] for r in paired]) if paired else None
    shadow = (
        spec.live_item_scores(paired, [r["shadow"]["output"] for r in paired]) if paired else None
    )
    report: dict[str, Any] = {
        "domain": domain,
        "shadow_version": version,
        "champion_versions": sorted({str(r.get("model_version")) for r in paired}),
        "other_shadow_versions": [v for v in versions if v != version],
        "n_paired": len(paired),
        "statuses": dict(statuses),
    }
    if champion is None or shadow is None:
        return report | {"rows": [], "judged": False, "passed": None,
                         "verdict": "no labelled request both models scored yet"}  # fmt: skip
    rows = judge_slice("field", shadow, champion, settings.gate_tolerance)
    judged = any(r.get("interval") is not None for r in rows)
    passed = all(r["passed"] for r in rows)
    if not judged:
        verdict = rows[0]["verdict"] if rows else "nothing to judge"
    elif passed:
        verdict = "the shadow is not significantly worse than the champion on the same requests"
    else:
        worse = ", ".join(r["metric"] for r in rows if not r["passed"])
        verdict = f"the shadow is significantly worse on {worse}"
    return report | {"rows": rows, "judged": judged, "passed": passed, "verdict": verdict}


def run_shadow_comparison(
    settings: Settings,
    domain: str,
    *,
    now: datetime,
    version: str | None = None,
    window: timedelta | None = None,
    limit: int = MAX_LABELLED,
    store: bool = True,
) -> dict[str, Any]:
    """Compare champion and shadow on the labels that arrived before `now` (predictions of the
    last `window`, or all); store the report (kind `shadow`, unless not `store`), return it."""
    start = None if window is None else now - window
    with open_db(settings) as db:
        records = recent_predictions(
            db, domain, start=start, end=now, labelled=True, with_input=False, limit=limit
        )
        report = compare_records(settings, domain, records, version) or {
            "domain": domain, "shadow_version": version, "n_paired": 0, "rows": [],
            "judged": False, "passed": None, "verdict": "no archived prediction has a shadow",
        }  # fmt: skip
        report |= {"n_labelled": len(records), "window_start": start, "window_end": now}
        if store:
            save(db, SHADOW, domain, report, created_at=now)
    logger.info(
        "%s shadow v%s: %d paired labelled requests, %s",
        domain, report.get("shadow_version"), report["n_paired"], report["verdict"],
    )  # fmt: skip
    return report


def promote_shadow(
    settings: Settings, domain: str, *, now: datetime, force: bool = False
) -> dict[str, Any]:
    """Make the shadow the champion when its field comparison was judged and passed (`force`:
    even when it failed or could not be judged yet: too few paired labelled requests); the
    shadow alias goes with it. PromotionRefused (with the verdict) otherwise; the replicas serve
    it after a reload (the caller's)."""
    from machine_health import registry

    version = registry.aliases(settings, domain).get(registry.SHADOW)
    if version is None:
        raise NotFound(f"{domain} has no @shadow to promote")
    report = run_shadow_comparison(settings, domain, now=now, version=version)
    if report.get("passed") is not True and not force:  # worse, or not judged yet
        raise PromotionRefused(
            f"{domain} shadow v{version} not promoted: {report['verdict']} "
            f"({report['n_paired']} paired labelled requests); force to override"
        )
    moved = registry.promote(settings, domain, version)
    logger.info("%s: shadow v%s promoted (%s)", domain, version, report["verdict"])
    forced = force and report.get("passed") is not True
    return {"domain": domain, "champion": moved, "forced": forced, "comparison": report}
