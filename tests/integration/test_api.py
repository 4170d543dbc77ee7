"""The prediction API on a real uvicorn, the real store and real trained models.

One server for the module (starting one loads TensorFlow and both models): the archive after
concurrent traffic, idempotency, labels, bad input, tokens and roles.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
from pymongo.database import Database

from machine_health.archive.predictions import new_prediction_id
from machine_health.archive.records import decode_samples
from machine_health.config import Settings
from machine_health.domains import get_domain
from tests.support.data import turbofan_rows
from tests.support.models import TrainedModels, api_settings
from tests.support.servers import Server, start_uvicorn
from tests.support.settings import own_database
from tests.support.users import create_users, login


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, store_uri: str, trained_models: TrainedModels
) -> Iterator[tuple[Server, Settings]]:
    tmp = tmp_path_factory.mktemp("api")
    settings = api_settings(tmp, store_uri, trained_models, login_max_failures=3)
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs")
    yield server, settings
    server.stop()


@pytest.fixture(scope="module")
def archive(api: tuple[Server, Settings]) -> Iterator[Database]:
    yield from own_database(api[1])


@pytest.fixture(scope="module")
def operator(api: tuple[Server, Settings]) -> dict[str, str]:
    return login(api[0].url, "operator")


@pytest.fixture(scope="module")
def examples(api: tuple[Server, Settings]) -> dict[str, dict[str, Any]]:
    data_dir = api[1].data_dir
    return {name: get_domain(name).example_input(data_dir) for name in ("vibration", "turbofan")}


def _vibration_windows(data_dir: Any, count: int) -> list[dict[str, Any]]:
    from machine_health.domains.vibration.demo import test_windows as vibration_windows

    return [w["body"] for w in vibration_windows(data_dir, count)]


def _assert_archived_as_answered(doc: dict[str, Any], answer: dict[str, Any], user: str) -> None:
    assert doc["domain"] == answer["domain"]
    assert doc["asset_id"] == answer["asset_id"]
    assert doc["cycle"] == answer["cycle"]
    assert doc["output"] == answer["prediction"]
    assert doc["model_name"] == answer["model"]["name"]
    assert doc["model_version"] == answer["model"]["version"]
    assert doc["model_alias"] == answer["model"]["alias"]
    assert doc["created_at"] == datetime.fromisoformat(answer["created_at"])
    assert doc["latency_ms"] == answer["latency_ms"]
    assert doc["request_id"] == answer["request_id"]
    assert doc["user"] == user
    assert doc["label"] is None and doc["schema_version"] == 1


def test_archive_equals_the_answers_after_concurrent_traffic(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str]
) -> None:
    server, settings = api
    windows = _vibration_windows(settings.data_dir, 48)
    units = turbofan_rows(settings.data_dir, units=8, cycles=6)
    tag = secrets.token_hex(3)

    async def traffic() -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[Any]]:
        sent: list[tuple[dict[str, Any], dict[str, Any]]] = []
        async with httpx.AsyncClient(base_url=server.url, headers=operator, timeout=60) as client:

            async def vibration(body: dict[str, Any]) -> None:
                response = await client.post("/predict/vibration", json=body)
                assert response.status_code == 200, response.text
                sent.append((body, response.json()))

            async def unit(number: int, rows: list[dict[str, Any]]) -> None:
                for row in rows:  # a unit's cycles in order, units concurrently
                    body = {"unit_id": f"conc-{tag}-{number}", **row}
                    response = await client.post("/predict/turbofan", json=body)
                    assert response.status_code == 200, response.text
                    sent.append((body, response.json()))

            metrics_before = (await client.get("/metrics")).text
            await asyncio.gather(
                *(vibration(w) for w in windows), *(unit(n, r) for n, r in units.items())
            )
            return sent, [metrics_before, (await client.get("/metrics")).text]

    sent, _ = asyncio.run(traffic())
    assert len(sent) == 48 + 8 * 6
    answers = {a["prediction_id"]: (body, a) for body, a in sent}
    assert len(answers) == len(sent)  # every prediction has its own id
    docs = {d["prediction_id"]: d for d in archive["predictions"].find({"user": "operator"})}
    mine = {pid: doc for pid, doc in docs.items() if pid in answers}
    assert len(mine) == len(answers)  # each answer archived exactly once
    for pid, (body, answer) in answers.items():
        assert answer["archived"] == "archived"
        doc = mine[pid]
        _assert_archived_as_answered(doc, answer, "operator")
        if answer["domain"] == "vibration":
            stored = decode_samples(doc["input"]["samples"])
            np.testing.assert_allclose(stored, body["samples"], rtol=1e-6, atol=1e-6)
            assert doc["input"]["sample_rate"] == body["sample_rate"]
            assert set(answer["prediction"]) >= {"anomaly_score", "is_anomaly", "fault_class"}
        else:
            assert doc["input"]["sensors"] == body["sensors"]
            assert answer["prediction"]["rul"] >= 0
            # the window grew with the unit's archived history
            assert answer["prediction"]["cycles_in_window"] == min(
                body["cycle"], settings.turbofan_window
            )


def test_openapi_examples_are_real_and_post_unchanged(
    api: tuple[Server, Settings], operator: dict[str, str]
) -> None:
    server, _ = api
    schema = httpx.get(f"{server.url}/openapi.json").json()
    for domain in ("vibration", "turbofan"):
        body = schema["paths"][f"/predict-test/{domain}"]["post"]["requestBody"]
        example = body["content"]["application/json"]["examples"]["real"]["value"]
        response = httpx.post(
            f"{server.url}/predict-test/{domain}", json=example, headers=operator, timeout=30
        )
        assert response.status_code == 200, response.text
        assert response.json()["archived"] == "not_archived"
    assert "/predict/{domain}" not in schema["paths"]  # only real domains are documented


def test_predict_test_writes_nothing(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    server, _ = api
    body = {**examples["vibration"], "asset_id": f"dry-{secrets.token_hex(3)}"}
    response = httpx.post(f"{server.url}/predict-test/vibration", json=body, headers=operator)
    assert response.status_code == 200
    assert archive["predictions"].find_one({"asset_id": body["asset_id"]}) is None


def test_idempotent_retries_return_the_first_answer_and_write_once(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    server, _ = api
    key = f"retry-{secrets.token_hex(4)}"
    headers = {**operator, "Idempotency-Key": key}
    body = {**examples["vibration"], "asset_id": f"idem-{key}"}

    async def burst() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post("/predict/vibration", json=body) for _ in range(6))
            )
            return [r.json() for r in responses if r.status_code == 200]

    answers = asyncio.run(burst())
    later = httpx.post(f"{server.url}/predict/vibration", json=body, headers=headers).json()
    answers.append(later)
    assert len(answers) == 7
    first = answers[0]
    for answer in answers:
        assert answer["prediction_id"] == first["prediction_id"]
        assert answer["prediction"] == first["prediction"]
        assert answer["created_at"] == first["created_at"]
    assert later["idempotent_replay"] is True
    assert len(list(archive["predictions"].find({"idempotency_key": key}))) == 1
    # The same key from another user is another request.
    admin = {**login(server.url, "admin"), "Idempotency-Key": key}
    other = httpx.post(f"{server.url}/predict/vibration", json=body, headers=admin).json()
    assert other["prediction_id"] != first["prediction_id"]


def test_idempotent_turbofan_retry_is_not_a_sequence_conflict(
    api: tuple[Server, Settings], operator: dict[str, str], examples: Any
) -> None:
    server, _ = api
    body = {**examples["turbofan"], "unit_id": f"idem-{secrets.token_hex(3)}", "cycle": 1}
    headers = {**operator, "Idempotency-Key": secrets.token_hex(8)}
    first = httpx.post(f"{server.url}/predict/turbofan", json=body, headers=headers)
    again = httpx.post(f"{server.url}/predict/turbofan", json=body, headers=headers)
    plain = httpx.post(f"{server.url}/predict/turbofan", json=body, headers=operator)
    assert first.status_code == again.status_code == 200
    assert again.json()["prediction_id"] == first.json()["prediction_id"]
    assert plain.status_code == 409 and "already recorded" in plain.json()["reason"]


def test_turbofan_context_comes_from_the_archive(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    """Cycles archived before (e.g. by another replica) form the window; going back is 409."""
    server, settings = api
    unit_id = f"ctx-{secrets.token_hex(3)}"
    rows = turbofan_rows(settings.data_dir, units=1, cycles=4)[1]
    for row in rows[:3]:
        response = httpx.post(
            f"{server.url}/predict/turbofan", json={"unit_id": unit_id, **row}, headers=operator
        )
        assert response.status_code == 200
    backwards = httpx.post(
        f"{server.url}/predict/turbofan", json={"unit_id": unit_id, **rows[1]}, headers=operator
    )
    assert backwards.status_code == 409
    assert backwards.json()["error"] == "sequence_conflict"
    # what is archived for the unit: exactly the three accepted cycles
    cycles = sorted(d["cycle"] for d in archive["predictions"].find({"asset_id": unit_id}))
    assert cycles == [r["cycle"] for r in rows[:3]]
    answer = httpx.post(
        f"{server.url}/predict/turbofan", json={"unit_id": unit_id, **rows[3]}, headers=operator
    ).json()
    assert answer["prediction"]["cycles_in_window"] == 4


def test_feedback_and_failure_backfill_label_the_archive(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    server, _ = api
    url = server.url
    vib = httpx.post(f"{url}/predict/vibration", json=examples["vibration"], headers=operator)
    pid = vib.json()["prediction_id"]
    bad = httpx.post(
        f"{url}/feedback", json={"prediction_id": pid, "label": "dragon"}, headers=operator
    )
    assert bad.status_code == 422 and "label" in bad.json()["reason"]
    ok = httpx.post(
        f"{url}/feedback", json={"prediction_id": pid, "label": "inner_race"}, headers=operator
    )
    assert ok.status_code == 200
    doc = archive["predictions"].find_one({"prediction_id": pid})
    assert doc["label"] == "inner_race" and doc["label_source"] == "feedback"
    assert isinstance(doc["labelled_at"], datetime)  # a BSON date, not a string
    assert datetime.fromisoformat(ok.json()["labelled_at"]) == doc["labelled_at"]
    missing = httpx.post(
        f"{url}/feedback", json={"prediction_id": "0" * 32, "label": "normal"}, headers=operator
    )
    assert missing.status_code == 404

    unit_id = f"fail-{secrets.token_hex(3)}"
    for cycle in (1, 2, 5):
        body = {**examples["turbofan"], "unit_id": unit_id, "cycle": cycle}
        assert httpx.post(f"{url}/predict/turbofan", json=body, headers=operator).status_code == 200
    early = httpx.post(
        f"{url}/assets/{unit_id}/failure", json={"failure_cycle": 4}, headers=operator
    )
    assert early.status_code == 422
    filled = httpx.post(
        f"{url}/assets/{unit_id}/failure", json={"failure_cycle": 30}, headers=operator
    )
    assert filled.status_code == 200 and filled.json()["labelled"] == 3
    cycles = list(archive["predictions"].find({"asset_id": unit_id}))
    assert {d["cycle"]: d["label"] for d in cycles} == {1: 29.0, 2: 28.0, 5: 25.0}
    assert all(isinstance(d["labelled_at"], datetime) for d in cycles)
    # what the retraining pipeline extracts
    extracted = list(
        archive["predictions"].find(
            {
                "domain": "turbofan",
                "label": {"$ne": None},
                "labelled_at": {"$lte": datetime.now().astimezone()},
            }
        )
    )
    assert {d["asset_id"] for d in extracted} >= {unit_id}


def test_listing_filters_and_paginates(
    api: tuple[Server, Settings], operator: dict[str, str], examples: Any
) -> None:
    server, _ = api
    asset = f"page-{secrets.token_hex(3)}"
    ids = []
    for _ in range(5):
        body = {**examples["vibration"], "asset_id": asset}
        ids.append(
            httpx.post(f"{server.url}/predict/vibration", json=body, headers=operator).json()[
                "prediction_id"
            ]
        )
    viewer = login(server.url, "viewer")
    params = {"domain": "vibration", "asset_id": asset, "limit": 2}
    pages, cursor = [], None
    while True:
        page = httpx.get(
            f"{server.url}/predictions",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=viewer,
        ).json()
        pages.extend(page["items"])
        if (cursor := page["next_cursor"]) is None:
            break
    assert [p["prediction_id"] for p in pages] == ids[::-1]  # newest first
    assert pages[0]["input"]["samples_encoding"] == "float32-le-base64"
    one = httpx.get(f"{server.url}/predictions/{ids[0]}", headers=viewer).json()
    assert one["prediction_id"] == ids[0] and one["asset_id"] == asset
    since = pages[-1]["created_at"]
    later = httpx.get(
        f"{server.url}/predictions",
        params={"asset_id": asset, "since": since, "limit": 10},
        headers=viewer,
    ).json()
    assert {p["prediction_id"] for p in later["items"]} <= set(ids)
    injected = httpx.get(
        f"{server.url}/predictions", params={"asset_id": '{"$ne": null}'}, headers=viewer
    )
    assert injected.status_code == 422  # no operator ever reaches a query


@pytest.mark.parametrize(
    ("path", "make_body", "status", "field"),
    [
        (
            "/predict/vibration",
            lambda e: {**e["vibration"], "samples": e["vibration"]["samples"][:10]},
            422,
            "samples",
        ),
        (
            "/predict/vibration",
            lambda e: {**e["vibration"], "sample_rate": 5.0},
            422,
            "sample_rate",
        ),
        ("/predict/vibration", lambda e: {**e["vibration"], "samples": "abc"}, 422, "samples"),
        ("/predict/turbofan", lambda e: {**e["turbofan"], "sensors": [1.0] * 20}, 422, "sensors"),
        ("/predict/turbofan", lambda e: {**e["turbofan"], "cycle": 0}, 422, "cycle"),
        (
            "/predict/turbofan",
            lambda e: {k: v for k, v in e["turbofan"].items() if k != "settings"},
            422,
            "settings",
        ),
        ("/predict/gearbox", lambda e: e["vibration"], 404, None),
        ("/predict-test/gearbox", lambda e: e["vibration"], 404, None),
    ],
)
def test_bad_input_is_a_json_error_naming_the_field(
    api: tuple[Server, Settings],
    archive: Database,
    operator: dict[str, str],
    examples: Any,
    path: str,
    make_body: Any,
    status: int,
    field: str | None,
) -> None:
    server, _ = api
    before = archive["predictions"].estimated_document_count()
    response = httpx.post(f"{server.url}{path}", json=make_body(examples), headers=operator)
    assert response.status_code == status
    body = response.json()
    assert body["reason"] and body["error"]
    if field:
        assert field in body["reason"]
    assert archive["predictions"].estimated_document_count() == before  # nothing half-written


def test_nan_infinity_and_oversized_bodies(
    api: tuple[Server, Settings], operator: dict[str, str], examples: Any
) -> None:
    server, settings = api
    headers = {**operator, "Content-Type": "application/json"}
    raw = httpx.Request("POST", "/", json=examples["turbofan"]).content.decode()
    nan_body = raw.replace(str(examples["turbofan"]["sensors"][3]), "NaN", 1)
    inf_body = raw.replace(str(examples["turbofan"]["settings"][2]), "Infinity", 1)
    for content, field in ((nan_body, "sensors"), (inf_body, "settings")):
        response = httpx.post(f"{server.url}/predict/turbofan", content=content, headers=headers)
        assert response.status_code == 422 and field in response.json()["reason"]
    # Not JSON at all, or cut short: a 422 that says where, not a 500 (bodies are parsed by
    # pydantic-core, api/json_body.py).
    for broken in (raw[: len(raw) // 2], "samples=1,2,3", raw.replace(":", "=", 1)):
        response = httpx.post(f"{server.url}/predict/turbofan", content=broken, headers=headers)
        assert response.status_code == 422, response.text
        assert "JSON" in response.json()["reason"]
    huge = b'{"samples": [' + b"0.0," * (settings.max_body_bytes // 4) + b"0.0]}"
    response = httpx.post(f"{server.url}/predict/vibration", content=huge, headers=headers)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts received bytes
        yield b'{"samples": ['
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"0.0," * 16384
        yield b"0.0]}"

    response = httpx.post(f"{server.url}/predict/vibration", content=chunks(), headers=headers)
    assert response.status_code == 413


def test_batch_scores_every_item_within_the_limit(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    server, settings = api
    unit_id = f"batch-{secrets.token_hex(3)}"
    items = [{**examples["turbofan"], "unit_id": unit_id, "cycle": c} for c in (1, 2, 3)]
    response = httpx.post(
        f"{server.url}/predict/turbofan/batch", json={"items": items}, headers=operator
    )
    assert response.status_code == 200
    answers = response.json()["items"]
    assert [a["cycle"] for a in answers] == [1, 2, 3]
    assert [a["prediction"]["cycles_in_window"] for a in answers] == [1, 2, 3]
    assert len(list(archive["predictions"].find({"asset_id": unit_id}))) == 3
    too_many = {"items": [examples["vibration"]] * (settings.predict_batch_limit + 1)}
    response = httpx.post(f"{server.url}/predict/vibration/batch", json=too_many, headers=operator)
    assert response.status_code == 422 and "items" in response.json()["reason"]
    disorder = {"items": [items[0], {**items[0]}]}
    response = httpx.post(f"{server.url}/predict/turbofan/batch", json=disorder, headers=operator)
    assert response.status_code == 422


def test_a_batch_scores_each_units_cycles_as_one_run_with_the_same_answers(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    """A batch's cycles of one unit are scored as a run (one state read, one claim, one group
    commit): each answer equals the same cycle sent alone, and a retry under the same
    Idempotency-Key gets the first answers without archiving anything again."""
    server, _ = api
    tag = secrets.token_hex(3)
    sensors = examples["turbofan"]["sensors"]

    def cycle(unit: str, c: int) -> dict[str, Any]:  # the sensors drift with the cycle
        return {**examples["turbofan"], "unit_id": unit, "cycle": c,
                "sensors": [v * (1 + 0.002 * c) for v in sensors]}  # fmt: skip

    units = [f"run-{tag}-{u}" for u in range(3)]
    items = [cycle(u, c) for c in range(1, 7) for u in units]  # interleaved, as a fleet sends
    headers = {**operator, "Idempotency-Key": f"runs-{tag}"}
    response = httpx.post(f"{server.url}/predict/turbofan/batch", json={"items": items},
                          headers=headers)  # fmt: skip
    assert response.status_code == 200, response.text
    answers = response.json()["items"]
    alone = [
        httpx.post(
            f"{server.url}/predict/turbofan", json=cycle(f"alone-{tag}", c), headers=operator
        ).json()
        for c in range(1, 7)
    ]
    for index, answer in enumerate(answers):
        assert answer["cycle"] == items[index]["cycle"]
        first = alone[answer["cycle"] - 1]["prediction"]  # float32 sums differ by batch size
        assert answer["prediction"]["rul"] == pytest.approx(first["rul"], rel=1e-5)
        assert {**answer["prediction"], "rul": 0} == {**first, "rul": 0}
    for unit in units:
        assert len(list(archive["predictions"].find({"asset_id": unit}))) == 6
    again = httpx.post(f"{server.url}/predict/turbofan/batch", json={"items": items},
                       headers=headers).json()["items"]  # fmt: skip
    assert [a["prediction_id"] for a in again] == [a["prediction_id"] for a in answers]
    assert all(a.get("idempotent_replay") for a in again)
    assert sum(1 for _ in archive["predictions"].find({"asset_id": {"$in": units}})) == 18
    next_cycles = [cycle(u, 7) for u in units]
    response = httpx.post(f"{server.url}/predict/turbofan/batch", json={"items": next_cycles},
                          headers=operator)  # fmt: skip
    assert [a["prediction"]["cycles_in_window"] for a in response.json()["items"]] == [7] * 3


def test_a_cycle_claimed_by_a_request_that_never_answered_is_scored_again_on_its_retry(
    api: tuple[Server, Settings], archive: Database, operator: dict[str, str], examples: Any
) -> None:
    """A replica that claimed cycle 2 in the unit's state and died before archiving it left
    the claim: a retry under the same Idempotency-Key is scored on the cycles before it and
    archived once, without claiming the cycle again (not a 409); without the key it is a 409."""
    server, _ = api
    unit = f"reclaim-{secrets.token_hex(3)}"
    first = {**examples["turbofan"], "unit_id": unit, "cycle": 1}
    assert (
        httpx.post(f"{server.url}/predict/turbofan", json=first, headers=operator).status_code
        == 200
    )
    key = f"retry-{secrets.token_hex(4)}"
    state = archive["unit_state"].find_one({"_id": f"turbofan:{unit}"})
    claimed_input = {**state["inputs"][-1], "cycle": 2}
    archive["unit_state"].update_one(  # what the dead replica's claim left behind
        {"_id": state["_id"]},
        {"$set": {"inputs": [*state["inputs"], claimed_input], "last_cycle": 2,
                  "last_prediction_id": new_prediction_id("operator", key),
                  "seq": state["seq"] + 1}},
    )  # fmt: skip
    second = {**first, "cycle": 2}
    plain = httpx.post(f"{server.url}/predict/turbofan", json=second, headers=operator)
    assert plain.status_code == 409, plain.text
    retry = httpx.post(
        f"{server.url}/predict/turbofan", json=second, headers={**operator, "Idempotency-Key": key}
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["prediction"]["cycles_in_window"] == 2
    assert archive["predictions"].count_documents({"asset_id": unit}) == 2
    after = archive["unit_state"].find_one({"_id": f"turbofan:{unit}"})
    assert after["seq"] == state["seq"] + 1 and after["last_cycle"] == 2  # not claimed again
    third = httpx.post(f"{server.url}/predict/turbofan", json={**first, "cycle": 3},
                       headers=operator)  # fmt: skip
    assert third.status_code == 200 and third.json()["prediction"]["cycles_in_window"] == 3


# --- security over HTTP ---------------------------------------------------------------------
def test_token_attacks_are_401_never_500(api: tuple[Server, Settings], examples: Any) -> None:
    server, settings = api
    secret = settings.jwt_secret.get_secret_value()  # type: ignore[union-attr]
    now = int(time.time())
    claims = {
        "sub": "operator",
        "role": "admin",
        "iat": now,
        "exp": now + 600,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": "x",
    }
    tokens = {
        "alg-none": jwt.encode(claims, None, algorithm="none"),
        "wrong-key": jwt.encode(claims, "k" * 48, algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - 120}, secret, algorithm="HS256"),
        "wrong-audience": jwt.encode({**claims, "aud": "other"}, secret, algorithm="HS256"),
        "malformed": "a.b.c",
        "empty-ish": "%%%",
    }
    for name, token in tokens.items():
        response = httpx.post(
            f"{server.url}/predict/vibration",
            json=examples["vibration"],
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
    assert (
        httpx.post(f"{server.url}/predict/vibration", json=examples["vibration"]).status_code == 401
    )
    log = server.log.read_text()
    assert secret not in log and all(t not in log for t in tokens.values() if len(t) > 8)


def test_roles(api: tuple[Server, Settings], examples: Any) -> None:
    server, settings = api
    url = server.url
    viewer, operator = login(url, "viewer"), login(url, "operator")
    service = {"Authorization": f"Bearer {settings.service_token.get_secret_value()}"}  # type: ignore[union-attr]
    assert (
        httpx.post(
            f"{url}/predict/vibration", json=examples["vibration"], headers=viewer
        ).status_code
        == 403
    )
    assert httpx.get(f"{url}/predictions", headers=viewer).status_code == 200
    assert httpx.put(f"{url}/reload", headers=operator).status_code == 403
    assert (
        httpx.put(
            f"{url}/reload", json={"domain": "vibration"}, headers=service, timeout=60
        ).status_code
        == 200
    )
    assert (
        httpx.post(
            f"{url}/predict/vibration", json=examples["vibration"], headers=service
        ).status_code
        == 403
    )
    new_user = {
        "username": f"u{secrets.token_hex(3)}",
        "password": "long-enough-1",
        "role": "operator",
    }
    assert httpx.post(f"{url}/register", json=new_user).status_code == 401  # self-registration off
    assert httpx.post(f"{url}/register", json=new_user, headers=operator).status_code == 403
    admin = login(url, "admin")
    created = httpx.post(f"{url}/register", json=new_user, headers=admin)
    assert created.status_code == 201 and "password_hash" not in created.json()
    assert httpx.post(f"{url}/register", json=new_user, headers=admin).status_code == 409
    token = httpx.post(
        f"{url}/token", data={"username": new_user["username"], "password": new_user["password"]}
    )
    assert token.status_code == 200 and token.json()["role"] == "operator"


def test_login_is_throttled_per_user(api: tuple[Server, Settings]) -> None:
    server, settings = api
    from tests.support.users import create_user

    name = f"t{secrets.token_hex(3)}"
    create_user(settings, name, "viewer", "the-right-password")
    statuses = [
        httpx.post(
            f"{server.url}/token", data={"username": name, "password": "wrong-password"}
        ).status_code
        for _ in range(settings.login_max_failures)
    ]
    assert statuses == [401] * settings.login_max_failures
    locked = httpx.post(
        f"{server.url}/token", data={"username": name, "password": "the-right-password"}
    )
    assert locked.status_code == 429 and locked.json()["error"] == "throttled"
    assert "wrong-password" not in server.log.read_text()


def test_ops_endpoints(api: tuple[Server, Settings]) -> None:
    server, settings = api
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json()["store"] == "ok"
    version = httpx.get(f"{server.url}/version").json()
    assert version["replica"] == settings.replica_name
    for domain in ("vibration", "turbofan"):
        model = version["models"][domain]
        assert model["version"] == "1" and model["alias"] == "champion" and model["loaded_at"]
    metrics = httpx.get(f"{server.url}/metrics").text
    for series in (
        "machine_health_predictions_total",
        "machine_health_prediction_latency_seconds",
        "machine_health_archive_write_seconds",
        "machine_health_spool_depth",
        "machine_health_archive_failures_total",
        "machine_health_model_info",
        "machine_health_reloads_total",
        "http_requests_total",
    ):
        assert series in metrics
    assert (
        'machine_health_model_info{alias="champion",domain="turbofan",version="1"} 1.0' in metrics
    )
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and 'href="docs"' in page.text
    assert httpx.get(f"{server.url}/nowhere").json()["error"] == "not_found"


def test_simulator_replays_real_data_and_its_labels(
    api: tuple[Server, Settings], archive: Database
) -> None:
    """`machine-health simulate` (the demo's traffic) against the live API: every C-MAPSS test
    cycle of the chosen units archived and labelled from RUL_FD001, every CWRU window labelled."""
    from machine_health.domains.turbofan.data import load_subset
    from machine_health.simulate import simulate
    from tests.support.users import PASSWORDS

    server, settings = api
    result = asyncio.run(
        simulate(
            server.url, "operator", PASSWORDS["operator"], settings.data_dir,
            domains=["turbofan", "vibration"], units=2, limit=14,
        )
    )  # fmt: skip
    tag = result["tag"]
    fd001 = load_subset(settings.data_dir, "FD001")
    for unit, true_rul in ((1, fd001.rul[0]), (2, fd001.rul[1])):
        cycles = fd001.test[fd001.test["unit"] == unit]["cycle"].tolist()
        docs = list(archive.predictions.find({"asset_id": f"FD001-{tag}-u{unit:03d}"}))
        assert sorted(d["cycle"] for d in docs) == cycles
        labels = {d["cycle"]: d["label"] for d in docs}
        assert labels[cycles[-1]] == true_rul  # the true RUL after the last test cycle
        assert labels[cycles[0]] == true_rul + cycles[-1] - cycles[0]
    assert result["turbofan"]["acknowledged"] == len(fd001.test[fd001.test["unit"] <= 2])
    vibration = result["vibration"]
    assert vibration["acknowledged"] == 14 and vibration["labels_sent"] == 14
