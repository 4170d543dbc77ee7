"""The workspace of one pipeline run: `<var>/runs/<domain>/<run_id>/` (a PVC in the cluster).

Every step reads what the steps before it wrote here and records its own small JSON result as
`<step>.json`, together with the data interval it ran for. A step that finds its own result for
the same interval returns it instead of running again, so a retried task is a no-op; the same
run id with ANOTHER interval is refused (a run id names one interval).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine_health.config import Settings
from machine_health.errors import PipelineError
from machine_health.files import write_text_atomic

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def parse_time(value: str | datetime) -> datetime:
    """An ISO-8601 instant (Airflow's `{{ data_interval_end }}`) as an aware UTC datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:  # a naive time from a user means UTC, as everywhere in Airflow
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def safe_run_id(run_id: str) -> str:
    """Airflow run ids hold ':' and '+' (e.g. scheduled__2026-01-01T00:00:00+00:00)."""
    cleaned = _SAFE_ID.sub("_", run_id).strip("._")
    if not cleaned:
        raise PipelineError(f"run id {run_id!r} has no usable characters")
    return cleaned


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename: a crash never leaves half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str, sort_keys=True))


@dataclass(frozen=True)
class Workspace:
    """The directory of one run of one domain, keyed by run id and data interval."""

    settings: Settings
    domain: str
    run_id: str
    interval_start: datetime
    interval_end: datetime

    @classmethod
    def open(
        cls,
        settings: Settings,
        domain: str,
        run_id: str,
        interval_start: str | datetime,
        interval_end: str | datetime,
    ) -> Workspace:
        start, end = parse_time(interval_start), parse_time(interval_end)
        if end < start:
            raise PipelineError(f"interval end {end} is before its start {start}")
        ws = cls(settings, domain, run_id, start, end)
        ws.path.mkdir(parents=True, exist_ok=True)
        ws._check_interval()
        return ws

    @property
    def path(self) -> Path:
        return self.settings.runs_dir / self.domain / safe_run_id(self.run_id)

    @property
    def interval(self) -> dict[str, str]:
        return {"start": self.interval_start.isoformat(), "end": self.interval_end.isoformat()}

    def file(self, name: str) -> Path:
        return self.path / name

    def _check_interval(self) -> None:
        marker = self.file("run.json")
        mine = {"domain": self.domain, "run_id": self.run_id, "interval": self.interval}
        if marker.exists():
            recorded = json.loads(marker.read_text())
            if recorded.get("interval") != self.interval:
                raise PipelineError(
                    f"run {self.run_id!r} of {self.domain} was for interval "
                    f"{recorded.get('interval')}, not {self.interval}: a run id names one interval"
                )
            return
        write_json_atomic(marker, mine)

    # --- step results ------------------------------------------------------------------------
    def result(self, step: str) -> dict[str, Any] | None:
        """The recorded result of `step` in this run, or None if it has not completed."""
        path = self.file(f"{step}.json")
        return json.loads(path.read_text()) if path.exists() else None

    def require(self, step: str) -> dict[str, Any]:
        """The result of an earlier step (PipelineError when it has not run)."""
        found = self.result(step)
        if found is None:
            raise PipelineError(
                f"{self.domain} run {self.run_id!r}: step {step!r} has not completed "
                f"(no {self.file(step + '.json')})"
            )
        return found

    def record(self, step: str, result: dict[str, Any]) -> dict[str, Any]:
        """Store a step's result (with the run's keys) and return it."""
        full = {
            "step": step,
            "domain": self.domain,
            "run_id": self.run_id,
            "interval": self.interval,
            **result,
        }
        write_json_atomic(self.file(f"{step}.json"), full)
        logger.info("%s %s %s: %s", self.domain, self.run_id, step, _brief(full))
        return json.loads(json.dumps(full, default=str))

    def short_circuited(self) -> dict[str, Any] | None:
        """The validate result when it said "nothing new" (later steps then do nothing)."""
        validated = self.result("validate")
        if validated is not None and validated.get("nothing_new"):
            return validated
        return None

    def skipped(self, step: str, reason: dict[str, Any]) -> dict[str, Any]:
        return self.record(step, {"skipped": True, "reason": reason.get("reason", "nothing new")})


def _brief(result: dict[str, Any]) -> str:
    keys = [k for k in result if k not in {"step", "domain", "run_id", "interval"}]
    return ", ".join(f"{k}={result[k]}" for k in keys[:8])
