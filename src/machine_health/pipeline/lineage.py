"""What earlier runs consumed, read back from the registry's version tags.

The register step tags every version it creates with the run id, the data interval end and the
snapshot's sha256. The registry is the one record that survives workspaces (a PVC can be
wiped), so "what is new" and "was this run already registered" are answered from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from machine_health import registry
from machine_health.config import Settings
from machine_health.pipeline.workspace import parse_time

TAG_RUN_ID = "pipeline_run_id"
TAG_INTERVAL_END = "pipeline_interval_end"
TAG_SNAPSHOT = "snapshot_sha256"
TAG_GATE = "gate_passed"


def pipeline_versions(settings: Settings, domain: str) -> list[dict[str, Any]]:
    """Registered versions that a pipeline run created (newest first)."""
    return [v for v in registry.list_versions(settings, domain) if TAG_RUN_ID in v["tags"]]


def consumed_until(settings: Settings, domain: str) -> datetime | None:
    """The latest data interval end a registered version was trained on (None: never retrained).

    A version that failed the gate counts too: its data was looked at, and retraining on the
    same rows again would only give the same verdict.
    """
    ends = [parse_time(v["tags"][TAG_INTERVAL_END]) for v in pipeline_versions(settings, domain)]
    return max(ends) if ends else None


def version_of_run(settings: Settings, domain: str, run_id: str) -> str | None:
    """The version a run registered, if it did (a retried register must reuse it)."""
    for v in pipeline_versions(settings, domain):
        if v["tags"].get(TAG_RUN_ID) == run_id:
            return str(v["version"])
    return None
