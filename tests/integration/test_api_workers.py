"""`machine-health serve --workers 2`: a reload reaches both worker processes of the replica.

A real `serve` process (uvicorn's multi-process supervisor, two spawned workers) on the
session's models. `PUT /reload` lands on one worker; every later `GET /version` and prediction,
whichever worker answers it, must show the new version within seconds, and the pipeline's
reload step must wait until both workers serve what it asked for.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from machine_health import registry
from machine_health.domains import get_domain
from machine_health.pipeline.reload import reload_replicas
from tests.support.models import TrainedModels, api_settings, register_version
from tests.support.servers import start_serve
from tests.support.users import create_users, login


def _version_calls(url: str, n: int) -> list[dict[str, Any]]:
    """`n` GET /version, each on a new connection (so the kernel hands them to either worker)."""
    return [httpx.get(f"{url}/version", timeout=10).json() for _ in range(n)]


def _wait_until_both_serve(url: str, domain: str, version: str, timeout_s: float) -> float:
    """Seconds until both worker pids answered with `version`, and then 20 calls in a row did."""
    started = time.monotonic()
    seen: set[int] = set()
    while time.monotonic() - started < timeout_s:
        answers = _version_calls(url, 20)
        if all(a["models"][domain]["version"] == version for a in answers):
            seen |= {a["pid"] for a in answers}
            if len(seen) == 2:
                return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"both workers did not serve {domain} v{version} in {timeout_s}s")


def test_reload_reaches_every_worker_and_the_reload_step_waits_for_all(
    tmp_path: Path, store_uri: str, trained_models: TrainedModels
) -> None:
    settings = api_settings(tmp_path, store_uri, trained_models)
    champion, ref = registry.load(settings, "vibration")
    new_version = register_version(settings, champion, "workers-test", "vibration")
    create_users(settings)
    server = start_serve(settings, tmp_path / "logs", workers=2)
    url = server.url
    service = {"Authorization": f"Bearer {settings.service_token.get_secret_value()}"}  # type: ignore[union-attr]
    try:
        # Both workers up, on the champion (they start independently).
        _wait_until_both_serve(url, "vibration", ref.version, 120)
        status = _version_calls(url, 1)[0]["workers"]
        assert status["expected"] == 2 and len(status["live"]) == 2 and status["converged"]

        reload = httpx.put(
            f"{url}/reload", json={"domain": "vibration", "version": new_version},
            headers=service, timeout=120,
        )  # fmt: skip
        assert reload.status_code == 200, reload.text
        leader = reload.json()["results"][0]
        assert leader["new"]["version"] == new_version
        # The other worker follows within a few seconds (it polls about once a second).
        assert _wait_until_both_serve(url, "vibration", new_version, 15) < 15
        answers = _version_calls(url, 10)
        for answer in answers:
            assert answer["workers"]["converged"] is True
            assert {m["vibration"] for m in answer["workers"]["live"].values()} == {new_version}
        # Predictions, on either worker, are scored by the new version.
        operator = login(url, "operator")
        body = get_domain("vibration").example_input(settings.data_dir)
        scored = [
            httpx.post(f"{url}/predict-test/vibration", json=body, headers=operator, timeout=30)
            for _ in range(10)
        ]
        assert {r.json()["model"]["version"] for r in scored} == {new_version}

        # The pipeline's reload step (back to @champion) returns once BOTH workers serve it.
        outcome = reload_replicas(
            settings.model_copy(update={"serving_urls": [url]}), "vibration", ref.version,
            timeout_s=60,
        )  # fmt: skip
        assert set(outcome["replicas"]) == {url}
        for answer in _version_calls(url, 10):  # right after it returned, no straggler
            live = answer["workers"]["live"]
            assert len(live) == 2
            assert {m["vibration"] for m in live.values()} == {ref.version}
            assert answer["models"]["vibration"]["alias"] == "champion"
    finally:
        server.stop()
    # A clean stop of `serve` removes the replica's sync folder.
    assert not list((settings.var_dir / "workers").glob("*"))
