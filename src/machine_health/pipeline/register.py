"""Step 6: register the challenger (ONE artifact: transform + model) and move the aliases.

The new version gets `challenger`; if the gate passed, `champion` moves to it and the old
champion becomes `previous` -- or, with `MH_PROMOTION=shadow` and a champion to compare with,
`shadow` moves to it: every replica scores live requests with it beside the champion, and its
comparison on the labels that arrive decides its promotion (monitoring/shadow.py). The
version is tagged with the run id: a retried register finds it (in the workspace, or in the
registry if the step died after registering) and never creates a second version.
"""

from __future__ import annotations

import logging
from typing import Any

from machine_health import registry
from machine_health.pipeline import lineage
from machine_health.pipeline.steps import StepRun, step

logger = logging.getLogger(__name__)


@step("register")
def run(job: StepRun) -> dict[str, Any]:
    """Register the run's challenger once; promote it when the gate passed."""
    settings, domain, run_id, ws = job.settings, job.domain, job.run_id, job.ws
    extracted = job.inputs["extract"]
    trained = job.inputs["train"]
    evaluated = job.inputs["evaluate"]
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
    current = registry.aliases(settings, domain).get(registry.CHAMPION)
    shadowed = passed and settings.promotion == "shadow" and current not in (None, version)
    if shadowed:
        registry.set_shadow(settings, domain, version)
    elif passed:
        promoted = registry.promote(settings, domain, version)
    aliases = registry.aliases(settings, domain)
    return {
        "version": version,
        "reused_version": reused,
        "gate_passed": passed,
        "promoted": passed and not shadowed,
        "shadowed": shadowed,
        "old_champion": promoted["old"]
        if passed and not shadowed
        else evaluated.get("champion_version"),
        "champion": aliases.get(registry.CHAMPION),
        "previous": aliases.get(registry.PREVIOUS),
    }
