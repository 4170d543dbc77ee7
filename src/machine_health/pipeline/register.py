"""Step 6: register the challenger (ONE artifact: transform + model) and move the aliases.

The new version gets `challenger`; if the gate passed, `champion` moves to it and the old
champion becomes `previous`. The version is tagged with the run id: a retried register finds
it (in the workspace, or in the registry if the step died after registering) and never
creates a second version.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from machine_health import registry
from machine_health.config import Settings
from machine_health.pipeline import lineage
from machine_health.pipeline.workspace import Workspace

logger = logging.getLogger(__name__)

STEP = "register"


def run(
    *,
    settings: Settings,
    domain: str,
    run_id: str,
    interval_start: str | datetime,
    interval_end: str | datetime,
    force: bool = False,
) -> dict[str, Any]:
    """Register the run's challenger once; promote it when the gate passed."""
    ws = Workspace.open(settings, domain, run_id, interval_start, interval_end)
    if not force and (done := ws.result(STEP)) is not None:
        return done
    if (nothing := ws.short_circuited()) is not None:
        return ws.skipped(STEP, nothing)
    extracted = ws.require("extract")
    trained = ws.require("train")
    evaluated = ws.require("evaluate")
    passed = bool(evaluated["passed"])
    version = lineage.version_of_run(settings, domain, run_id)
    reused = version is not None
    if version is None:
        tags = {
            lineage.TAG_RUN_ID: run_id,
            lineage.TAG_INTERVAL_END: ws.interval["end"],
            lineage.TAG_SNAPSHOT: extracted["sha256"],
            lineage.TAG_GATE: str(passed).lower(),
        }
        version = registry.register_logged(
            settings, domain, trained["model_uri"], tags=tags, aliases=(registry.CHALLENGER,)
        ).version
    else:
        registry.set_alias(settings, domain, registry.CHALLENGER, version)
    promoted: dict[str, str | None] = {"old": None, "new": None}
    if passed:
        promoted = registry.promote(settings, domain, version)
    aliases = registry.aliases(settings, domain)
    return ws.record(
        STEP,
        {
            "version": version,
            "reused_version": reused,
            "gate_passed": passed,
            "promoted": passed,
            "old_champion": promoted["old"] if passed else evaluated.get("champion_version"),
            "champion": aliases.get(registry.CHAMPION),
            "previous": aliases.get(registry.PREVIOUS),
        },
    )
