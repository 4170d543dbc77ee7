"""The predictions page's filters and the projection's colouring, against archives whose rows
differ in domain, asset, model version and age.

`varied`: a private archive and registry (vibration v1 and v2, both the session's real model;
turbofan v1) behind a second API; real traffic through it, vibration first under v1 then, after
a promote and reload, under v2; then some of those real predictions are re-dated days back, as
older traffic would be. The truth is the store, queried here.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest
from pymongo import MongoClient
from streamlit.testing.v1 import AppTest

from machine_health import registry
from machine_health.archive.keys import record_keys
from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset
from machine_health.domains.vibration.demo import test_windows as vibration_windows
from tests.support.models import TrainedModels, register_version
from tests.support.servers import start_uvicorn
from tests.support.ui import SeededApi, app_as
from tests.support.users import create_users, login

pytestmark = pytest.mark.slow
UNITS = ("FD001-flt-u001", "FD001-flt-u002")


def _post(api: str, path: str, body: Any, headers: dict[str, str], method: str = "POST") -> Any:
    response = httpx.request(method, api + path, json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _traffic(url: str, settings: Any, headers: dict[str, dict[str, str]]) -> None:
    windows = [w["body"] for w in vibration_windows(settings.data_dir / "cwru", 14)]
    _post(url, "/predict/vibration/batch", {"items": windows[:8]}, headers["operator"])
    _post(url, "/models/vibration/promote", {"version": "2"}, headers["admin"])
    _post(url, "/reload", {"domain": "vibration"}, headers["admin"], method="PUT")
    _post(url, "/predict/vibration/batch", {"items": windows[8:]}, headers["operator"])
    data = load_subset(settings.data_dir, "FD001")
    for unit_id, unit in zip(UNITS, data.test_units, strict=False):
        rows = data.test[data.test["unit"] == unit].sort_values("cycle").head(5)
        items = [
            {"unit_id": unit_id, "cycle": int(r["cycle"]),
             "settings": [float(r[c]) for c in SETTINGS], "sensors": [float(r[c]) for c in SENSORS]}
            for _, r in rows.iterrows()
        ]  # fmt: skip
        _post(url, "/predict/turbofan/batch", {"items": items}, headers["operator"])


def _ids(db: Any, **query: Any) -> list[str]:
    return [d["prediction_id"] for d in db.predictions.find(query).sort("created_at", 1)]


def _redate(db: Any, ids: list[str], age: timedelta) -> None:
    """Move real predictions `age` back in time.

    Re-inserted with the sort keys of the new time (archive/keys.py), not `$set`: the embedded
    store (nx-27017 0.8.1) stores a datetime given to a top-level `$set` as text, which no date
    range then matches (tests/integration/test_store_contract.py pins that).
    """
    for doc in list(db.predictions.find({"prediction_id": {"$in": ids}})):
        db.predictions.delete_one({"_id": doc["_id"]})
        moved = {**doc, "created_at": doc["created_at"] - age}
        db.predictions.insert_one({**moved, **record_keys(moved)})  # its time keys move too


@pytest.fixture(scope="module")
def varied(
    seeded: SeededApi, pristine_models: TrainedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SeededApi]:
    tmp = tmp_path_factory.mktemp("ui-filters")
    settings = seeded.settings.model_copy(
        update={"var_dir": tmp / "var", "mlflow_tracking_uri": None,
                "mongodb_db": f"t_{uuid.uuid4().hex[:12]}"}
    )  # fmt: skip
    vibration, _ = registry.load(
        seeded.settings, "vibration", version=pristine_models.vibration_version
    )
    turbofan, _ = registry.load(
        seeded.settings, "turbofan", version=pristine_models.turbofan_version
    )
    register_version(
        settings, vibration, "filters-vibration-1", "vibration", aliases=(registry.CHAMPION,)
    )
    register_version(settings, vibration, "filters-vibration-2", "vibration")
    register_version(
        settings, turbofan, "filters-turbofan-1", "turbofan", aliases=(registry.CHAMPION,)
    )
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    client: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    db = client[settings.mongodb_db]
    try:
        headers = {role: login(server.url, role) for role in ("admin", "operator", "viewer")}
        _traffic(server.url, settings, headers)
        first = _ids(db, domain="vibration", model_version="1")
        _redate(db, first[:2], timedelta(days=10))
        _redate(db, first[2:5], timedelta(days=3))
        _redate(db, _ids(db, asset_id=UNITS[1]), timedelta(days=2))
        yield dataclasses.replace(seeded, url=server.url, settings=settings, db=db, headers=headers)
    finally:
        server.stop()
        client.drop_database(settings.mongodb_db)
        client.close()


def _archived(api: SeededApi, **query: Any) -> list[str]:
    """Ids the archive holds for `query`, in the page's order (newest first; within one
    millisecond by prediction id, descending: archive/keys.py), first page."""
    docs = api.db.predictions.find(query, {"prediction_id": 1, "domain_time_key": 1})
    order = sorted(docs, key=lambda d: d["domain_time_key"].split("/", 1)[1], reverse=True)
    return [d["prediction_id"] for d in order[:50]]


def _shown(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["id"])


def test_predictions_filters_show_exactly_the_matching_rows(varied: SeededApi) -> None:
    at = app_as(varied, "viewer", "predictions")
    everything = _archived(varied)
    assert _shown(at) == everything and len(everything) == 24
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    week_ago = datetime.now(UTC) - timedelta(days=7)
    vibration_v1 = {"domain": "vibration", "model_version": "1"}
    unit = {"domain": "turbofan", "asset_id": UNITS[1]}
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("pred_domain", "vibration", {"domain": "vibration"}),
        ("pred_version", "2", {"domain": "vibration", "model_version": "2"}),
        ("pred_version", "1", vibration_v1),
        ("pred_range", "last 7 days", {**vibration_v1, "created_at": {"$gte": week_ago}}),
        ("pred_range", "last 24 hours", {**vibration_v1, "created_at": {"$gte": day_ago}}),
        ("pred_domain", "turbofan", {"domain": "turbofan", "created_at": {"$gte": day_ago}}),
        ("pred_asset", UNITS[1], {**unit, "created_at": {"$gte": day_ago}}),
        ("pred_range", "all time", unit),
    ]
    sizes = set()
    for key, value, query in steps:
        if key == "pred_asset":
            at.text_input(key=key).input(value).run()
        else:
            at.selectbox(key=key).select(value).run()
        assert not at.exception, [e.value for e in at.exception]
        expected = _archived(varied, **query)
        if expected:
            assert _shown(at) == expected, (key, value)
            assert len(expected) < len(everything)
        else:  # the unit re-dated two days back: nothing of it in the last 24 hours
            assert "No archived prediction matches" in at.info[0].value, (key, value)
        sizes.add(len(expected))
    assert len(sizes) >= 6  # the filters changed what the table holds


def _chart_data(at: AppTest) -> tuple[dict[str, Any], pd.DataFrame]:
    """The projection chart's Vega-Lite spec and the data Streamlit sent with it."""
    (chart,) = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    (dataset,) = chart.proto.datasets
    return spec, pa.ipc.open_stream(dataset.data.data).read_pandas()


def test_projection_colours_by_the_chosen_column(seeded: SeededApi) -> None:
    at = app_as(seeded, "viewer", "projection")
    truth = {
        d["prediction_id"]: d
        for d in seeded.db.predictions.find({"domain": "vibration"}, {"input": 0})
    }
    spec, data = _chart_data(at)
    assert at.selectbox(key="proj_colour_vibration").value == "fault_class"
    assert spec["encoding"]["color"]["field"] == "fault_class"
    assert set(data["prediction_id"]) == set(truth)
    assert data["fault_class"].tolist() == [
        truth[p]["output"]["fault_class"] for p in data["prediction_id"]
    ]
    at.selectbox(key="proj_colour_vibration").select("label").run()
    spec, data = _chart_data(at)
    assert spec["encoding"]["color"]["field"] == "label"
    expected = [truth[p].get("label") or "not labelled" for p in data["prediction_id"]]
    assert data["label"].tolist() == expected
    assert "not labelled" in expected and len(set(expected)) > 2  # labelled and unlabelled points
