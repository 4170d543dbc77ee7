"""The validate step quarantines rows that break a rule instead of failing the run (real store).

One bad label (a failure far beyond the unit's cycles: "label outside ...") used to fail every
later retrain of the domain; now its unit is quarantined, listed with the reason in the step's
result and `quarantine.json`, and the later steps read the snapshot without it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient

from machine_health.archive.client import PREDICTIONS, ensure_indexes_sync
from machine_health.archive.records import PredictionRecord
from machine_health.config import Settings
from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
from machine_health.errors import ValidationFailed
from machine_health.pipeline import step_function
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.validate import QUARANTINE_LISTED
from machine_health.pipeline.workspace import Workspace

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def store(settings: Settings) -> Iterator[Any]:
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    db = client[settings.mongodb_db]
    ensure_indexes_sync(db)
    yield db
    client.drop_database(settings.mongodb_db)
    client.close()


def _unit_docs(rows: Any, unit: str, failure_cycle: int, at: datetime) -> list[dict[str, Any]]:
    """A unit's archived cycles (real FD001 inputs), labelled by a posted failure."""
    docs = []
    for i, (_, r) in enumerate(rows.sort_values("cycle").iterrows()):
        cycle = int(r["cycle"])
        created = at + timedelta(seconds=i)
        docs.append(PredictionRecord(
            prediction_id=uuid.uuid4().hex, domain="turbofan", asset_id=unit, cycle=cycle,
            input={"unit_id": unit, "cycle": cycle, "settings": [float(r[c]) for c in SETTINGS],
                   "sensors": [float(r[c]) for c in SENSORS]},
            output={}, model_name="turbofan", model_version="1", user="operator",
            request_id=uuid.uuid4().hex, latency_ms=1.0, created_at=created,
            label=float(failure_cycle - cycle), labelled_at=created + timedelta(minutes=5),
            label_source="failure", labelled_by="operator",
        ).to_document())  # fmt: skip
    return docs


def _steps(settings: Settings, run_id: str) -> dict[str, Any]:
    keys = {"settings": settings, "domain": "turbofan", "run_id": run_id,
            "interval_start": (START - timedelta(days=1)).isoformat(),
            "interval_end": (START + timedelta(days=1)).isoformat()}  # fmt: skip
    step_function("extract")(**keys)
    return keys


def test_a_bad_label_is_quarantined_and_the_run_goes_on(settings: Settings, store: Any) -> None:
    test = load_subset(settings.data_dir, "FD001").test
    units = {u: rows for u, rows in test.groupby("unit", sort=True) if u <= 4}
    docs: list[dict[str, Any]] = []
    for u, rows in units.items():
        docs += _unit_docs(rows, f"u{u}", int(rows["cycle"].max()) + 20, START)
    bad_rows = units[4]
    # unit 4's failure was posted far beyond any plausible life: labels above the 1e4 range
    docs = [d for d in docs if d["asset_id"] != "u4"]
    docs += _unit_docs(bad_rows, "u4", 50_000, START)
    store[PREDICTIONS].insert_many(docs)
    bad_ids = {d["prediction_id"] for d in docs if d["asset_id"] == "u4"}

    keys = _steps(settings, "q1")
    result = step_function("validate")(**keys)
    assert result["rows"] == len(docs) - len(bad_ids)
    assert result["quarantined"] == len(bad_ids)
    assert result["quarantine_reasons"] == {"label outside [0, 10000]": len(bad_ids)}
    listed = result["quarantined_rows"]
    assert len(listed) == min(len(bad_ids), QUARANTINE_LISTED)
    assert {r["prediction_id"] for r in listed} <= bad_ids
    assert all(r["reason"] == "label outside [0, 10000]" for r in listed)
    assert result["units"] == 3 and not result["nothing_new"]

    ws = Workspace.open(settings, "turbofan", "q1", keys["interval_start"], keys["interval_end"])
    assert {
        r["prediction_id"] for r in json.loads(ws.file("quarantine.json").read_text())["rows"]
    } == bad_ids
    # the later steps read the snapshot without the quarantined unit; validate itself sees all
    kept = read_snapshot(ws).column("prediction_id").to_pylist()
    assert len(kept) == len(docs) - len(bad_ids) and not bad_ids & set(kept)
    assert read_snapshot(ws, validated=False).num_rows == len(docs)
    # the report JSON of the run (the step's recorded result) holds the same
    assert ws.result("validate")["quarantined"] == len(bad_ids)


def test_the_run_fails_only_when_no_valid_row_is_left(settings: Settings, store: Any) -> None:
    test = load_subset(settings.data_dir, "FD001").test
    rows = test[test["unit"] == 1]
    docs = _unit_docs(rows, "u1", 50_000, START)
    store[PREDICTIONS].insert_many(docs)
    keys = _steps(settings, "q2")
    with pytest.raises(ValidationFailed, match="nothing left to train on"):
        step_function("validate")(**keys)


def test_the_retraining_page_says_what_was_quarantined() -> None:
    from machine_health.ui.views.retraining import quarantine_note

    line = json.dumps({"step": "validate", "rows": 90, "quarantined": 2,
                       "quarantined_rows": [{"prediction_id": "a1", "reason": "label outside"},
                                            {"prediction_id": "b2", "reason": "label outside"}],
                       "quarantine_reasons": {"label outside [0, 10000]": 2}})  # fmt: skip
    note = quarantine_note(line)
    assert note is not None and "quarantined 2 row(s)" in note and "a1, b2" in note
    assert "label outside [0, 10000]: 2" in note
    assert quarantine_note({"quarantined": 0}) is None and quarantine_note(None) is None
