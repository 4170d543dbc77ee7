"""`helm test`: one prediction through the API Service, the way a client makes it.

Run by the test hook pod (templates/tests/api-predict.yaml) with the serving image's Python:
GET /health, a bearer token, POST /predict-test/vibration (scored, never archived: the test
leaves nothing in the store), and the answer must name the served model.

The token: with `tests.credentialsSecret` the pod logs in (POST /token) as that user, which
also proves the login path and needs no key in the pod. Without it the pod mints a two-minute
token for the user "helm-test" (role operator) with the API's own code and JWT key
(MH_JWT_SECRET, mounted like in the API pods): tokens are verified by signature and claims
alone, so no user needs to exist for a fresh install to be tested.
"""

from __future__ import annotations

import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any

API = os.environ["MH_API_URL"].rstrip("/")
TIMEOUT_S = float(os.environ.get("MH_TEST_TIMEOUT_S", "60"))
SAMPLE_RATE = 12_000.0
WINDOW = 2048


def call(method: str, path: str, *, token: str | None = None, data: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, Any]:  # fmt: skip
    # MH_API_URL is the chart's own http:// Service URL (ConfigMap), never user input.
    request = urllib.request.Request(API + path, data=data, method=method)  # noqa: S310
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")[:500]


def access_token() -> str:
    username = os.environ.get("MH_TEST_USERNAME")
    if username:
        form = urllib.parse.urlencode(
            {"username": username, "password": os.environ["MH_TEST_PASSWORD"]}
        ).encode()
        status, body = call(
            "POST", "/token", data=form, content_type="application/x-www-form-urlencoded"
        )
        if status != 200:
            fail(f"POST /token as {username!r}: HTTP {status} {body}")
        return str(body["access_token"])
    from machine_health.api.security import create_access_token
    from machine_health.config import Settings

    # env="dev" only skips the check that every server secret is set: this pod holds the JWT
    # key alone; issuer, audience and algorithm come from the same MH_* settings as the API's.
    settings = Settings(env="dev", _env_file=None)
    token, _ = create_access_token(settings, "helm-test", "operator", ttl=timedelta(minutes=2))
    return token


def vibration_window() -> dict[str, Any]:
    """A synthetic accelerometer window: a shaft tone, a bearing-like tone and a little hum."""
    samples = [
        0.05 * math.sin(2 * math.pi * 29.95 * i / SAMPLE_RATE)
        + 0.02 * math.sin(2 * math.pi * 107.4 * i / SAMPLE_RATE)
        + 0.01 * math.sin(2 * math.pi * 3_000.0 * i / SAMPLE_RATE)
        for i in range(WINDOW)
    ]
    return {"asset_id": "helm-test", "samples": samples, "sample_rate": SAMPLE_RATE}


def fail(message: str) -> None:
    print(f"helm test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    status, body = call("GET", "/health")
    if status != 200:
        fail(f"GET {API}/health: HTTP {status} {body}")
    token = access_token()
    payload = json.dumps(vibration_window()).encode()
    status, body = call("POST", "/predict-test/vibration", token=token, data=payload)
    if status != 200:
        _, ready = call("GET", "/ready")
        fail(f"POST /predict-test/vibration: HTTP {status} {body}; /ready says {ready}")
    if body.get("archived") != "not_archived" or not body.get("model"):
        fail(f"unexpected answer: {body}")
    print(json.dumps({"ok": True, "api": API, "model": body["model"]}))


if __name__ == "__main__":
    main()
