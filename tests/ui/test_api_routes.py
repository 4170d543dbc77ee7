"""The API routes the UI reads (stats, projection, reports, models) and the admin-only alias
moves, on the real seeded API: aggregates equal what the store holds, roles are enforced."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.support.ui import SeededApi

pytestmark = pytest.mark.slow


def _get(api: SeededApi, path: str, role: str = "viewer", **params: Any) -> Any:
    response = httpx.get(api.url + path, headers=api.headers[role], params=params, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _docs(api: SeededApi, **query: Any) -> list[dict[str, Any]]:
    return list(api.db.predictions.find(query, {"input": 0}))


def test_overview_aggregates_match_the_store(seeded: SeededApi) -> None:
    body = _get(seeded, "/stats/overview", bucket="hour")
    vibration, turbofan = body["domains"]["vibration"], body["domains"]["turbofan"]
    vib_docs, tf_docs = _docs(seeded, domain="vibration"), _docs(seeded, domain="turbofan")
    assert vibration["total"] == len(vib_docs)
    assert vibration["labelled"] == sum(d.get("label") is not None for d in vib_docs)
    assert vibration["anomalies"] == sum(bool(d["output"]["is_anomaly"]) for d in vib_docs)
    classes: dict[str, int] = {}
    for doc in vib_docs:
        classes[doc["output"]["fault_class"]] = classes.get(doc["output"]["fault_class"], 0) + 1
    assert vibration["by_fault_class"] == dict(sorted(classes.items()))
    assert sum(vibration["over_time"].values()) == len(vib_docs)
    assert turbofan["total"] == len(tf_docs)
    assert turbofan["assets"] == len({d["asset_id"] for d in tf_docs})
    histogram = turbofan["rul_histogram"]
    for row in histogram[:-1]:
        inside = [d for d in tf_docs if row["low"] <= d["output"]["rul"] < row["high"]]
        assert row["n"] == len(inside), row
    assert sum(r["n"] for r in histogram) == len(tf_docs)
    assert turbofan["by_model_version"] == {"1": len(tf_docs)}
    assert body["archive"] == {"store": "ok", "spool_depth": 0, "replica": "local"}
    assert body["served"]["vibration"]["version"] == "1"


def test_overview_time_window(seeded: SeededApi) -> None:
    # whole seconds away from the data: the embedded store compares dates to the second
    oldest = seeded.db.predictions.find_one({}, sort=[("created_at", 1)])["created_at"]
    newest = seeded.db.predictions.find_one({}, sort=[("created_at", -1)])["created_at"]
    before = _get(seeded, "/stats/overview", since=(oldest - timedelta(seconds=2)).isoformat())
    after = _get(seeded, "/stats/overview", since=(newest + timedelta(seconds=2)).isoformat())
    all_time = _get(seeded, "/stats/overview")  # counted by store aggregates
    for domain in ("vibration", "turbofan"):
        assert before["domains"][domain]["total"] == len(_docs(seeded, domain=domain))
        # a window counted from its rows gives exactly what the aggregates give
        assert before["domains"][domain] == all_time["domains"][domain]
        assert after["domains"][domain]["total"] == 0
        assert after["domains"][domain]["over_time"] == {}


def test_projection_has_one_point_per_archived_prediction(seeded: SeededApi) -> None:
    body = _get(seeded, "/projection/vibration", limit=1000)
    docs = _docs(seeded, domain="vibration")
    assert body["n"] == len(docs)
    assert {p["prediction_id"] for p in body["points"]} == {d["prediction_id"] for d in docs}
    first, second = body["explained_variance"]
    assert 0 < second <= first <= 1
    labels = {d["prediction_id"]: d.get("label") for d in docs}
    assert all(p["label"] == labels[p["prediction_id"]] for p in body["points"])


def test_reports_newest_first(seeded: SeededApi) -> None:
    body = _get(seeded, "/reports/drift", domain="vibration")
    stored = list(seeded.db.reports.find({"kind": "drift", "domain": "vibration"}))
    assert len(body["items"]) == len(stored) == 2
    times = [r["created_at"] for r in body["items"]]
    assert times == sorted(times, reverse=True)
    assert body["items"][0]["n_rows"] == max(stored, key=lambda r: r["created_at"])["n_rows"]
    bad = httpx.get(seeded.url + "/reports/secrets", headers=seeded.headers["viewer"])
    assert bad.status_code == 422


def test_models_lists_versions_and_aliases(seeded: SeededApi) -> None:
    body = _get(seeded, "/models")
    for domain in ("vibration", "turbofan"):
        info = body["domains"][domain]
        assert info["aliases"] == {"champion": "1", "challenger": "1"}
        assert [v["version"] for v in info["versions"]] == ["1"]
        assert info["versions"][0]["metrics"]
        assert info["served"]["version"] == "1"
    missing = httpx.get(
        seeded.url + "/models/vibration/versions/1/gate", headers=seeded.headers["viewer"]
    )
    assert missing.status_code == 404
    assert "no gate report" in missing.json()["reason"]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_alias_moves_are_for_admins_only(seeded: SeededApi, role: str) -> None:
    for path, body in (
        ("/models/vibration/promote", {"version": "1"}),
        ("/models/vibration/rollback", None),
    ):
        response = httpx.post(seeded.url + path, json=body, headers=seeded.headers[role])
        assert response.status_code == 403, response.text
    anonymous = httpx.post(seeded.url + "/models/vibration/rollback")
    assert anonymous.status_code == 401


def test_admin_alias_moves_are_checked(seeded: SeededApi) -> None:
    admin = seeded.headers["admin"]
    unknown = httpx.post(
        f"{seeded.url}/models/vibration/promote", json={"version": "99"}, headers=admin
    )
    assert unknown.status_code == 404
    no_previous = httpx.post(f"{seeded.url}/models/vibration/rollback", headers=admin)
    assert no_previous.status_code == 404
    assert "no @previous" in no_previous.json()["reason"]
    same = httpx.post(
        f"{seeded.url}/models/vibration/promote", json={"version": "1"}, headers=admin, timeout=60
    )
    assert same.status_code == 200
    assert same.json()["aliases"]["champion"] == "1"
    assert "previous" not in same.json()["aliases"]  # promoting the champion moves nothing
    nowhere = httpx.post(f"{seeded.url}/models/nowhere/rollback", headers=admin)
    assert nowhere.status_code == 404
