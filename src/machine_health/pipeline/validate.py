"""Step 2: check the snapshot (schema, NaN, ranges, label balance), or say "nothing new".

The rules are the domain's (`Domain.validation_problems`). A row that breaks a rule is
quarantined, not fatal: one bad label must not fail every later retrain of its domain. The
step's result counts the quarantined rows per rule and lists the first `QUARANTINE_LISTED`
(prediction id and reason); `quarantine.json` in the run's workspace lists them all, and the
later steps read the snapshot without them (`extract.read_snapshot`). A domain may quarantine
more than the bad row (a turbofan unit with one bad row is quarantined whole). The run fails
(`ValidationFailed`) only when the snapshot itself is wrong (columns, row count) or no valid row
is left.
A snapshot with no row labelled after the data the last registered version consumed is a
"nothing new" result: not an error, and every later step of the run then does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from machine_health.domains import get_domain
from machine_health.domains.base import Problem
from machine_health.errors import ValidationFailed
from machine_health.pipeline import lineage
from machine_health.pipeline.extract import QUARANTINE_FILE, read_snapshot, snapshot_schema
from machine_health.pipeline.steps import StepRun, step
from machine_health.pipeline.workspace import write_json_atomic

logger = logging.getLogger(__name__)

#: most quarantined rows listed (id and reason) in the step's result; all are in quarantine.json
QUARANTINE_LISTED = 50


def quarantine(table: pa.Table, problems: list[Problem]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The mask of the rows to keep, and every quarantined row's id and reasons."""
    bad = np.zeros(table.num_rows, dtype=bool)
    reasons: dict[int, list[str]] = {}
    for rule, mask in problems:
        bad |= mask
        for i in np.flatnonzero(mask):
            reasons.setdefault(int(i), []).append(rule)
    ids = table.column("prediction_id")
    rows = [{"prediction_id": str(ids[i].as_py()), "reason": "; ".join(reasons[i])}
            for i in sorted(reasons)]  # fmt: skip
    return ~bad, rows


@step("validate")
def run(job: StepRun) -> dict[str, Any]:
    """Validate the run's snapshot; `nothing_new` when no row is newer than the last version's."""
    settings, domain, ws = job.settings, job.domain, job.ws
    extracted = job.inputs["extract"]
    table = read_snapshot(ws, validated=False)
    expected = snapshot_schema(domain).names
    if table.schema.names != expected:
        raise ValidationFailed(
            f"snapshot columns {table.schema.names} differ from the {domain} schema {expected}"
        )
    if table.num_rows != extracted["rows"]:
        raise ValidationFailed(
            f"snapshot holds {table.num_rows} rows, the manifest says {extracted['rows']}"
        )
    rules = get_domain(domain)
    problems = rules.validation_problems(table, settings)
    keep, quarantined = quarantine(table, problems)
    # Every quarantined id (the later steps leave them out: `extract.read_snapshot`), written
    # before the result: a retried step rewrites both.
    write_json_atomic(ws.file(QUARANTINE_FILE), {"rows": quarantined})
    by_rule = {rule: int(mask.sum()) for rule, mask in problems}
    if quarantined:
        logger.warning("%s: %d row(s) quarantined: %s", domain, len(quarantined), by_rule)
        if not keep.any():
            raise ValidationFailed(
                f"every one of the {table.num_rows} row(s) failed validation, nothing left to "
                f"train on: {by_rule}, e.g. prediction {quarantined[0]['prediction_id']}"
            )
    table = table.filter(pa.array(keep))
    facts = rules.validation_facts(table)
    consumed = lineage.consumed_until(settings, domain)
    labelled_at = table.column("labelled_at")
    if consumed is None:
        new_rows = table.num_rows
    else:
        new_rows = int(pc.sum(pc.greater(labelled_at, pa.scalar(consumed))).as_py() or 0)
    result = {
        "rows": table.num_rows,
        "quarantined": len(quarantined),
        # the first QUARANTINE_LISTED of them (all in quarantine.json), and the count per rule
        "quarantined_rows": quarantined[:QUARANTINE_LISTED],
        "quarantine_reasons": by_rule,
        "new_rows": new_rows,
        "consumed_until": consumed.isoformat() if consumed else None,
        "nothing_new": new_rows == 0,
        **facts,
    }
    if new_rows == 0:
        result["reason"] = (
            f"no labelled {domain} prediction newer than {consumed.isoformat()} (the data of "
            "the last registered version): nothing to retrain on"
            if consumed
            else f"no labelled {domain} prediction in the archive"
        )
    return result
