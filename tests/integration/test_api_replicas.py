"""Two API replicas behind no affinity: a turbofan unit's answers do not depend on the replica.

Two real uvicorn processes share one real store (and one registry). A unit's cycles are sent
alternately to both; a control unit with the same inputs goes to one replica only. Every answer
must equal the control's, cycle by cycle, with no 409. A replica that restarts (empty memory)
continues a unit the other replica advanced, and a replica whose store goes away keeps scoring
from its memory (spooled) and hands its cycles over when the store is back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from machine_health.config import Settings
from tests.support.models import TrainedModels, api_settings
from tests.support.servers import Server, wait_for
from tests.support.settings import own_database
from tests.support.store import Store, spool_empty
from tests.support.users import create_users, login

CYCLES = 200
TOLERANCE = 1e-6


def _longest_unit(data_dir: Path, cycles: int) -> list[dict[str, Any]]:
    """The first `cycles` cycles of the longest unit of test_FD001, as request rows."""
    from machine_health.domains.turbofan.data import SENSORS, SETTINGS, load_subset

    test = load_subset(data_dir, "FD001").test
    unit = test.groupby("unit")["cycle"].count().idxmax()
    rows = test[test["unit"] == unit].sort_values("cycle").head(cycles)
    return [
        {
            "cycle": int(r["cycle"]),
            "settings": [float(r[c]) for c in SETTINGS],
            "sensors": [float(r[c]) for c in SENSORS],
        }
        for _, r in rows.iterrows()
    ]


def _replica(settings: Settings, tmp_path: Path, name: str) -> Settings:
    """`settings` for one more replica: same store and registry, its own var/ (spool) and name."""
    return settings.model_copy(update={"var_dir": tmp_path / name / "var", "replica_name": name})


def _post(client: httpx.Client, url: str, unit: str, row: dict[str, Any]) -> httpx.Response:
    return client.post(f"{url}/predict/turbofan", json={"unit_id": unit, **row})


def _assert_same_answers(
    got: list[dict[str, Any]], expected: list[dict[str, Any]], what: str
) -> None:
    assert len(got) == len(expected), what
    differ = []
    for a, b in zip(got, expected, strict=True):
        assert a["cycle"] == b["cycle"]
        pa, pb = a["prediction"], b["prediction"]
        same = (
            abs(pa["rul"] - pb["rul"]) <= TOLERANCE
            and pa["cycles_in_window"] == pb["cycles_in_window"]
            and pa["regime"] == pb["regime"]
        )
        if not same:
            differ.append((a["cycle"], pa, pb))
    assert not differ, f"{what}: {len(differ)} of {len(got)} answers differ, first {differ[:3]}"


@pytest.fixture
def settings_and_users(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels
) -> Iterator[Settings]:
    settings = api_settings(tmp_path, store_uri, trained_models)
    create_users(settings)
    yield settings
    for _ in own_database(settings):  # drop the test's database
        pass


def test_alternating_replicas_answer_as_one_replica(
    tmp_path: Path, settings_and_users: Settings, uvicorn_server: Callable[..., Server]
) -> None:
    settings = settings_and_users
    a = uvicorn_server(_replica(settings, tmp_path, "a"))
    b = uvicorn_server(_replica(settings, tmp_path, "b"))
    rows = _longest_unit(settings.data_dir, CYCLES)
    assert len(rows) == CYCLES
    tag = secrets.token_hex(3)
    spread, control = f"spread-{tag}", f"control-{tag}"
    statuses: list[int] = []
    spread_answers: list[dict[str, Any]] = []
    control_answers: list[dict[str, Any]] = []
    with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
        for i, row in enumerate(rows):
            response = _post(client, (a, b)[i % 2].url, spread, row)
            statuses.append(response.status_code)
            if response.status_code == 200:
                spread_answers.append(response.json())
        for row in rows:
            response = _post(client, a.url, control, row)
            assert response.status_code == 200, response.text
            control_answers.append(response.json())
    assert statuses == [200] * CYCLES, f"refused cycles: {[s for s in statuses if s != 200]}"
    _assert_same_answers(spread_answers, control_answers, "two replicas vs one")
    windows = [a["prediction"]["cycles_in_window"] for a in spread_answers]
    assert windows[-1] == min(CYCLES, settings.turbofan_window)
    # A cycle already recorded by the OTHER replica is refused, as one replica refuses it.
    with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
        again = _post(client, b.url, spread, rows[-1])  # the last cycle went to replica b
        again_a = _post(client, a.url, spread, rows[-1])
        backwards = _post(client, a.url, spread, rows[-3])
    assert again.status_code == again_a.status_code == backwards.status_code == 409


def test_restarted_replica_continues_the_unit(
    tmp_path: Path, settings_and_users: Settings, uvicorn_server: Callable[..., Server]
) -> None:
    """A replica restarted with empty memory continues a unit the other replica advanced,
    and its answers equal one replica's (here: the same replica before the restart)."""
    settings = settings_and_users
    a_settings = _replica(settings, tmp_path, "a")
    a = uvicorn_server(a_settings)
    b = uvicorn_server(_replica(settings, tmp_path, "b"))
    rows = _longest_unit(settings.data_dir, 40)
    tag = secrets.token_hex(3)
    unit, control = f"restart-{tag}", f"control-{tag}"
    with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
        expected = [_post(client, b.url, control, row).json() for row in rows]
        got = [_post(client, a.url, unit, row).json() for row in rows[:10]]  # a holds it
        got += [_post(client, b.url, unit, row).json() for row in rows[10:20]]  # b moves on
        a.stop()
        port = int(a.url.rsplit(":", 1)[1])
        a = uvicorn_server(a_settings, port=port)  # empty memory, stale knowledge gone
        for row in rows[20:30]:
            response = _post(client, a.url, unit, row)
            assert response.status_code == 200, response.text
            got.append(response.json())
        got += [_post(client, b.url, unit, row).json() for row in rows[30:]]
    _assert_same_answers(got, expected, "across a restart")


def test_store_down_falls_back_to_memory_then_hands_over(
    tmp_path: Path, trained_models: TrainedModels, uvicorn_server: Callable[..., Server]
) -> None:
    """Store down: the replica that holds the unit scores it from memory (spooled answers);
    once the store is back (the spool replayed), both replicas continue the unit with those
    cycles."""
    store = Store(tmp_path)
    store.start()
    try:
        settings = api_settings(tmp_path, store.uri, trained_models, store_timeout_ms=800)
        create_users(settings)
        a = uvicorn_server(_replica(settings, tmp_path, "a"))
        b = uvicorn_server(_replica(settings, tmp_path, "b"))
        rows = _longest_unit(settings.data_dir, 30)
        unit, control = "down-unit", "down-control"
        with httpx.Client(headers=login(a.url, "operator"), timeout=60) as client:
            expected = [_post(client, b.url, control, row).json() for row in rows]
            got = [_post(client, a.url, unit, row).json() for row in rows[:10]]
            assert {g["archived"] for g in got} == {"archived"}
            store.stop()
            for row in rows[10:20]:  # a knows the unit: from memory, spooled
                response = _post(client, a.url, unit, row)
                assert response.status_code == 200, response.text
                got.append(response.json())
            assert {g["archived"] for g in got[10:]} == {"spooled"}
            store.start()
            wait_for(lambda: spool_empty(a.url), 60, "the spool replay")
            time.sleep(0.2)
            for i, row in enumerate(rows[20:]):  # both continue it, with the cycles a spooled
                response = _post(client, (b, a)[i % 2].url, unit, row)
                assert response.status_code == 200, response.text
                got.append(response.json())
        _assert_same_answers(got, expected, "across a store outage")
    finally:
        store.stop()


def test_unit_state_rebuilds_skips_test_predictions_and_replays(
    tmp_path: Path, settings_and_users: Settings, uvicorn_server: Callable[..., Server]
) -> None:
    """The stored state is rebuilt from the archive when it is missing (a unit archived before
    it existed) or holds fewer cycles than the model reads; /predict-test and an idempotent
    replay leave it as it is."""
    settings = settings_and_users
    server = uvicorn_server(_replica(settings, tmp_path, "a"))
    rows = _longest_unit(settings.data_dir, 40)
    tag = secrets.token_hex(3)
    unit, control = f"state-{tag}", f"control-{tag}"
    store: MongoClient = MongoClient(settings.store_uri, tz_aware=True)
    states = store[settings.mongodb_db]["unit_state"]
    state_of = {"_id": f"turbofan:{unit}"}
    with store, httpx.Client(headers=login(server.url, "operator"), timeout=60) as client:
        expected = [_post(client, server.url, control, row).json() for row in rows]
        got = [_post(client, server.url, unit, row).json() for row in rows[:20]]
        states.delete_one(state_of)  # as if archived before the state existed
        got += [_post(client, server.url, unit, row).json() for row in rows[20:30]]
        doc = states.find_one(state_of)
        assert doc is not None and doc["last_cycle"] == rows[29]["cycle"]
        # as if written for a model reading 5 cycles: rebuilt for one reading more
        states.update_one(
            state_of, {"$set": {"inputs": doc["inputs"][-5:], "capacity": 5, "complete": False}}
        )
        got += [_post(client, server.url, unit, row).json() for row in rows[30:35]]
        seq = states.find_one(state_of)["seq"]
        dry = client.post(f"{server.url}/predict-test/turbofan", json={"unit_id": unit, **rows[35]})
        assert dry.status_code == 200 and dry.json()["archived"] == "not_archived"
        assert states.find_one(state_of)["seq"] == seq
        key = {"Idempotency-Key": secrets.token_hex(8)}
        body = {"unit_id": unit, **rows[35]}
        first = client.post(f"{server.url}/predict/turbofan", json=body, headers=key)
        seq = states.find_one(state_of)["seq"]
        again = client.post(f"{server.url}/predict/turbofan", json=body, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json()["idempotent_replay"] is True
        assert states.find_one(state_of)["seq"] == seq  # the replay advanced nothing
        got.append(first.json())
        got += [_post(client, server.url, unit, row).json() for row in rows[36:]]
        final = states.find_one(state_of)
    _assert_same_answers(got, expected, "across state rebuilds")
    assert dry.json()["prediction"] == expected[35]["prediction"]
    assert final["last_cycle"] == rows[-1]["cycle"]
    assert [i["cycle"] for i in final["inputs"]] == [r["cycle"] for r in rows]
