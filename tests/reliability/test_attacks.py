"""Attacks on a real uvicorn: nothing gets in, nothing answers 500.

One server for the module, with a JWT key rotation in progress (`MH_JWT_PREVIOUS_SECRET` set)
and a login throttle of 3 failures. The API's own tests (tests/integration/test_api.py) cover
the basic token and role checks; these go further: every forged token on every protected
route, the rotation grace, the per-client throttle, escalation through every privileged route,
operator injection into the archive's query, encoded path tricks.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from pymongo.database import Database

from machine_health.api.security import CLIENT_FACTOR
from machine_health.config import Settings
from machine_health.domains import get_domain
from tests.support.paths import DATA_DIR
from tests.support.reliability.scenarios import ReliabilityRegistry, serve_with_users
from tests.support.servers import Server
from tests.support.settings import own_database
from tests.support.users import PASSWORDS, create_user, login

PREVIOUS_KEY = secrets.token_urlsafe(48)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    store_uri: str,
    reliability_registry: ReliabilityRegistry,
) -> Iterator[tuple[Server, Settings]]:
    yield from serve_with_users(
        tmp_path_factory,
        "attacks",
        store_uri,
        reliability_registry,
        login_max_failures=3,
        jwt_previous_secret=PREVIOUS_KEY,
        max_body_bytes=256 * 1024,
    )


@pytest.fixture(scope="module")
def archive(api: tuple[Server, Settings]) -> Iterator[Database]:
    yield from own_database(api[1])


@pytest.fixture(scope="module")
def tokens(api: tuple[Server, Settings]) -> dict[str, dict[str, str]]:
    """Headers of each role, taken before any throttling test runs."""
    server, settings = api
    headers = {role: login(server.url, role) for role in PASSWORDS}
    service = settings.service_token.get_secret_value()  # type: ignore[union-attr]
    return {**headers, "service": {"Authorization": f"Bearer {service}"}}


@pytest.fixture(scope="module")
def examples() -> dict[str, dict[str, Any]]:
    return {name: get_domain(name).example_input(DATA_DIR) for name in ("vibration", "turbofan")}


# --- tokens ----------------------------------------------------------------------------------
def _claims(settings: Settings, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "admin", "role": "admin", "iat": now, "exp": now + 600,
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": secrets.token_hex(8),
    }  # fmt: skip
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _forged_tokens(settings: Settings) -> dict[str, str]:
    key = settings.jwt_secret.get_secret_value()  # type: ignore[union-attr]
    good = jwt.encode(_claims(settings), key, algorithm="HS256")
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    return {
        "forged signature": f"{header}.{payload}.{flipped}",
        "signed with another key": jwt.encode(_claims(settings), "x" * 48, algorithm="HS256"),
        "expired": jwt.encode(_claims(settings, exp=int(time.time()) - 60), key, "HS256"),
        "alg none": jwt.encode(_claims(settings), None, algorithm="none"),
        "alg none, real signature kept": ".".join(
            [
                jwt.encode(_claims(settings), None, algorithm="none").split(".")[0],
                payload,
                signature,
            ]
        ),
        "HS512 with the real key": jwt.encode(_claims(settings), key, algorithm="HS512"),
        "wrong audience": jwt.encode(_claims(settings, aud="another-api"), key, "HS256"),
        "wrong issuer": jwt.encode(_claims(settings, iss="evil-issuer"), key, "HS256"),
        "no expiry": jwt.encode(_claims(settings, exp=None), key, "HS256"),
        "no audience": jwt.encode(_claims(settings, aud=None), key, "HS256"),
        "unknown role": jwt.encode(_claims(settings, role="root"), key, "HS256"),
        "not yet valid": jwt.encode(_claims(settings, nbf=int(time.time()) + 3600), key, "HS256"),
        "garbage": "not-a-jwt",
        "header not json": "eyJub3QganNvbg.e30.c2ln",
    }


PROTECTED = [
    ("POST", "/predict/vibration"),
    ("GET", "/predictions"),
    ("PUT", "/reload"),
    ("POST", "/feedback"),
    ("POST", "/models/vibration/promote"),
]


def test_forged_tokens_are_401_on_every_protected_route(
    api: tuple[Server, Settings], examples: dict[str, Any]
) -> None:
    server, settings = api
    bodies = {
        "/predict/vibration": examples["vibration"],
        "/feedback": {"prediction_id": "abc", "label": "normal"},
        "/models/vibration/promote": {"version": "1"},
    }
    for name, token in _forged_tokens(settings).items():
        for method, path in PROTECTED:
            response = httpx.request(
                method, f"{server.url}{path}", json=bodies.get(path),
                headers={"Authorization": f"Bearer {token}"}, timeout=30,
            )  # fmt: skip
            assert response.status_code == 401, (name, path, response.text)
            assert response.json()["error"] == "unauthorized"
    log = server.log.read_text()
    assert settings.jwt_secret.get_secret_value() not in log  # type: ignore[union-attr]
    assert "Traceback" not in log


def test_previous_key_is_accepted_during_a_rotation(api: tuple[Server, Settings]) -> None:
    server, settings = api
    # The user's current token version, as a token of the new key carries it (`ver`).
    bearer = login(server.url, "viewer")["Authorization"].removeprefix("Bearer ")
    fresh = jwt.decode(bearer, options={"verify_signature": False})
    claims = _claims(settings, sub="viewer", role="viewer", ver=fresh["ver"])
    old = jwt.encode(claims, PREVIOUS_KEY, "HS256")
    response = httpx.get(f"{server.url}/predictions", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 200
    # ... but an expired token of the old key is not, whatever the key
    stale = jwt.encode(_claims(settings, exp=int(time.time()) - 60), PREVIOUS_KEY, "HS256")
    response = httpx.get(f"{server.url}/predictions", headers={"Authorization": f"Bearer {stale}"})
    assert response.status_code == 401


# --- roles -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("viewer", "PUT", "/reload", {"domain": "vibration"}),
        ("viewer", "POST", "/predict/vibration", "vibration"),
        ("viewer", "POST", "/predict/turbofan/batch", "turbofan-batch"),
        ("viewer", "POST", "/feedback", {"prediction_id": "abc", "label": "normal"}),
        (
            "viewer",
            "POST",
            "/register",
            {"username": "mallory1", "password": "long-enough-1", "role": "admin"},
        ),
        ("operator", "PUT", "/reload", {"domain": "vibration"}),
        (
            "operator",
            "POST",
            "/register",
            {"username": "mallory2", "password": "long-enough-1", "role": "admin"},
        ),
        ("operator", "POST", "/models/vibration/promote", {"version": "1"}),
        ("operator", "POST", "/models/vibration/rollback", None),
        (
            "service",
            "POST",
            "/register",
            {"username": "mallory3", "password": "long-enough-1", "role": "admin"},
        ),
        ("service", "POST", "/predict/vibration", "vibration"),
        ("service", "POST", "/models/vibration/promote", {"version": "1"}),
    ],
)
def test_role_escalation_is_403(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
    role: str,
    method: str,
    path: str,
    body: Any,
) -> None:
    server, _ = api
    if body == "vibration":
        body = examples["vibration"]
    elif body == "turbofan-batch":
        body = {"items": [examples["turbofan"]]}
    before = archive["predictions"].estimated_document_count()
    response = httpx.request(
        method, f"{server.url}{path}", json=body, headers=tokens[role], timeout=60
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    assert archive["predictions"].estimated_document_count() == before
    assert (
        archive["users"].find_one({"username": {"$in": ["mallory1", "mallory2", "mallory3"]}})
        is None
    )


# --- login brute force -------------------------------------------------------------------------
def _token(url: str, username: str, password: str, client_ip: str) -> int:
    # uvicorn trusts X-Forwarded-For from 127.0.0.1 (its default): each ip is another client.
    return httpx.post(
        f"{url}/token", data={"username": username, "password": password},
        headers={"X-Forwarded-For": client_ip}, timeout=30,
    ).status_code  # fmt: skip


def test_login_brute_force_is_throttled_per_client_and_per_user(
    api: tuple[Server, Settings],
) -> None:
    server, settings = api
    victim = f"victim{secrets.token_hex(3)}"
    create_user(settings, victim, "viewer", "victim-password-1")
    # One client spraying passwords over many user names (one try each, under the per-user
    # limit): 401 until the client's own limit, then 429 for everything from that client,
    # even the right password of a user it never tried.
    per_client = settings.login_max_failures * CLIENT_FACTOR
    spray = [
        _token(server.url, f"guess{i}", "wrong-password", "203.0.113.7") for i in range(per_client)
    ]
    assert spray == [401] * per_client
    assert _token(server.url, victim, "victim-password-1", "203.0.113.7") == 429
    # Another client is not punished for it...
    assert _token(server.url, victim, "victim-password-1", "198.51.100.1") == 200
    # ... but many clients guessing ONE user's password lock that user (per-user throttle).
    guesses = [
        _token(server.url, victim, f"guess-{i}", f"198.51.100.{10 + i}")
        for i in range(settings.login_max_failures)
    ]
    assert guesses == [401] * settings.login_max_failures
    assert _token(server.url, victim, "victim-password-1", "198.51.100.99") == 429
    response = httpx.post(
        f"{server.url}/token", data={"username": victim, "password": "victim-password-1"},
        headers={"X-Forwarded-For": "198.51.100.99"},
    )  # fmt: skip
    assert response.json()["error"] == "throttled" and response.headers["retry-after"]


def test_concurrent_guesses_cannot_outrun_the_throttle(api: tuple[Server, Settings]) -> None:
    """40 guesses of one password at once, from 40 addresses: at most the limit is checked."""
    server, settings = api
    victim = f"burst{secrets.token_hex(3)}"
    create_user(settings, victim, "viewer", "burst-password-1")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/token",
                        data={"username": victim, "password": f"guess-{i}"},
                        headers={"X-Forwarded-For": f"192.0.2.{i + 1}"},
                    )
                    for i in range(40)
                )
            )
        return [a.status_code for a in answers]

    # Three bursts: over all of them, no more guesses are checked than the limit allows.
    statuses = [status for _ in range(3) for status in asyncio.run(burst())]
    assert set(statuses) <= {401, 429}
    assert 1 <= statuses.count(401) <= settings.login_max_failures, statuses


# --- bodies --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/predict/vibration", "application/json"),
        ("/predict/turbofan/batch", "application/json"),
        ("/token", "application/x-www-form-urlencoded"),
        ("/register", "application/json"),
        ("/feedback", "application/json"),
    ],
)
def test_oversized_bodies_are_413_before_authentication(
    api: tuple[Server, Settings], path: str, content_type: str
) -> None:
    server, settings = api
    huge = b"a" * (settings.max_body_bytes + 1)
    # no token at all: the size limit answers first, without reading the rest
    response = httpx.post(
        f"{server.url}{path}", content=huge, headers={"Content-Type": content_type}, timeout=60
    )
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_422_and_nothing_is_archived(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
    value: float,
) -> None:
    server, _ = api
    headers = {**tokens["operator"], "Content-Type": "application/json"}
    before = archive["predictions"].estimated_document_count()
    samples = list(examples["vibration"]["samples"])
    samples[100] = value
    # json.dumps writes the NaN / Infinity / -Infinity literals Python's parser accepts
    window = json.dumps({**examples["vibration"], "samples": samples})
    for path, content in (
        ("/predict/vibration", window),
        ("/predict-test/vibration", window),
        ("/predict/vibration/batch", f'{{"items": [{window}]}}'),
    ):
        response = httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=60)
        assert response.status_code == 422, (path, response.text)
        assert "samples" in response.json()["reason"]
    assert archive["predictions"].estimated_document_count() == before


# --- injection -------------------------------------------------------------------------------
def _seed(url: str, headers: dict[str, str], body: dict[str, Any], assets: list[str]) -> None:
    for asset in assets:
        response = httpx.post(
            f"{url}/predict/vibration", json={**body, "asset_id": asset}, headers=headers,
            timeout=60,
        )  # fmt: skip
        assert response.status_code == 200


def test_operator_injection_in_the_archive_query_is_literal(
    api: tuple[Server, Settings],
    archive: Database,
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
) -> None:
    server, _ = api
    tag = secrets.token_hex(3)
    _seed(server.url, tokens["operator"], examples["vibration"], [f"a{tag}", f"b{tag}"])
    viewer = tokens["viewer"]

    def listing(params: Any) -> httpx.Response:
        return httpx.get(f"{server.url}/predictions", params=params, headers=viewer, timeout=30)

    everything = listing({"limit": 500}).json()["items"]
    # PHP/qs-style operator keys are just unknown parameters: no filter is applied, so the
    # answer is the unfiltered listing, never "every asset but a<tag>".
    for params in (
        {"asset_id[$ne]": f"a{tag}", "limit": 500},
        {"asset_id[$regex]": ".*", "limit": 500},
        {"$where": "sleep(1000)", "limit": 500},
        {"domain[$gt]": "", "limit": 500},
    ):
        response = listing(params)
        assert response.status_code == 200, params
        assert len(response.json()["items"]) == len(everything), params
    # Operator documents as values are refused by the field's pattern (422), never run.
    for params in (
        {"asset_id": '{"$gt": ""}'},
        {"asset_id": '{"$ne": null}'},
        {"asset_id": "$where"},
        {"model_version": '{"$regex": ".*"}'},
        {"domain": "vibration', '$or': [{}]"},
        {"since": '{"$gt": ""}'},
    ):
        response = listing(params)
        assert response.status_code == 422, (params, response.text)
    # A literal value matches only itself.
    only_a = listing({"asset_id": f"a{tag}"}).json()["items"]
    assert {d["asset_id"] for d in only_a} == {f"a{tag}"}
    # JSON bodies: an operator where a string belongs is a 422, and nothing is labelled.
    for body in (
        {"prediction_id": {"$ne": None}, "label": "normal"},
        {"prediction_id": {"$gt": ""}, "label": "normal"},
        {"prediction_id": "x", "label": {"$set": {"role": "admin"}}},
    ):
        response = httpx.post(
            f"{server.url}/feedback", json=body, headers=tokens["operator"], timeout=30
        )
        assert response.status_code == 422, (body, response.text)
    assert archive["predictions"].count_documents({"label": {"$ne": None}}) == 0
    # A user name is a literal too: an operator document cannot log anyone in.
    response = httpx.post(
        f"{server.url}/token", data={"username": '{"$ne": null}', "password": "x" * 10},
        headers={"X-Forwarded-For": "192.0.2.200"},
    )  # fmt: skip
    assert response.status_code == 401


# --- paths -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "raw_path"),
    [
        ("GET", "/predictions/..%2f..%2fusers"),
        ("GET", "/predictions/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
        ("GET", "/predictions/..%252f..%252fusers"),
        ("GET", "/predictions/abc%00def"),
        ("GET", "/predictions/%7B%22%24ne%22%3A1%7D"),
        ("POST", "/predict/..%2fturbofan"),
        ("POST", "/predict/vibration%2f..%2fturbofan"),
        ("POST", "/predict/vibration%2fbatch"),
        ("POST", "/predict/gearbox"),
        ("POST", "/predict/VIBRATION"),
        ("POST", "/predict-test/..%2f..%2freload"),
        ("GET", "/models/..%2f..%2freload/versions/1/gate"),
        ("GET", "/%2e%2e/%2e%2e/etc/passwd"),
    ],
)
def test_path_tricks_are_404_or_422_never_200_or_500(
    api: tuple[Server, Settings],
    tokens: dict[str, dict[str, str]],
    examples: dict[str, Any],
    method: str,
    raw_path: str,
) -> None:
    server, _ = api
    url = httpx.URL(server.url).copy_with(raw_path=raw_path.encode())
    body = examples["vibration"] if method == "POST" else None
    response = httpx.request(method, url, json=body, headers=tokens["admin"], timeout=60)
    assert response.status_code in (404, 422), (raw_path, response.status_code, response.text)
    assert response.json()["error"] in ("not_found", "validation_error", "invalid_input")


def test_the_server_log_holds_no_secret_and_no_traceback(api: tuple[Server, Settings]) -> None:
    server, settings = api
    log = server.log.read_text()
    for secret in (settings.jwt_secret, settings.service_token):
        assert secret.get_secret_value() not in log  # type: ignore[union-attr]
    assert PREVIOUS_KEY not in log
    assert all(password not in log for password in PASSWORDS.values())
    assert "Traceback" not in log and "internal_error" not in log
