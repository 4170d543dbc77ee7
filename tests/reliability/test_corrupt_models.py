"""Corrupt or incompatible versions in the registry: reload refuses them, the old model serves.

The versions are real registry entries made from the session's real bundles, then damaged the
way a registry or a bad push can damage them: a model file cut in half, a manifest that names a
class outside the project (code execution from the registry), a bundle of the wrong domain under
a domain's name. The API's own test covers a model that loads but predicts NaN.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from machine_health import registry
from machine_health.config import Settings
from tests.support.models import register_version
from tests.support.reliability.harness import service_headers
from tests.support.reliability.scenarios import (
    ReliabilityRegistry,
    _Tampered,
    foreign_class,
    registry_settings,
    serve_with_users,
    still_serving_v1,
    truncate_largest_file,
)
from tests.support.servers import Server
from tests.support.users import login


@pytest.fixture(scope="module")
def corrupt_versions(reliability_registry: ReliabilityRegistry) -> dict[str, tuple[str, str]]:
    """case -> (domain, version) of damaged versions registered WITHOUT any alias."""
    reg = registry_settings(reliability_registry.var_dir, reliability_registry.tracking_uri)
    vibration, vib_ref = registry.load(reg, "vibration", version="1")
    turbofan, turbo_ref = registry.load(reg, "turbofan", version="1")
    tag = secrets.token_hex(3)
    return {
        "truncated model file": (
            "vibration",
            register_version(
                reg, _Tampered(vibration, truncate_largest_file), f"cut-{tag}", "vibration"
            ),
        ),
        "truncated keras model": (
            "turbofan",
            register_version(
                reg, _Tampered(turbofan, truncate_largest_file), f"cutk-{tag}", "turbofan"
            ),
        ),
        "class outside the project": (
            "vibration",
            register_version(reg, _Tampered(vibration, foreign_class), f"eval-{tag}", "vibration"),
        ),
        "vibration bundle under the turbofan name": (
            "turbofan",
            registry.register_logged(reg, "turbofan", str(vib_ref.source), aliases=()).version,
        ),
        "turbofan bundle under the vibration name": (
            "vibration",
            registry.register_logged(reg, "vibration", str(turbo_ref.source), aliases=()).version,
        ),
    }


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    store_uri: str,
    reliability_registry: ReliabilityRegistry,
) -> Iterator[tuple[Server, Settings]]:
    yield from serve_with_users(tmp_path_factory, "corrupt", store_uri, reliability_registry)


REASONS = {
    "truncated model file": "cannot load",
    "truncated keras model": "cannot load",
    "class outside the project": "not a machine-health domain",
    "vibration bundle under the turbofan name": "holds a 'vibration' model, not 'turbofan'",
    "turbofan bundle under the vibration name": "holds a 'turbofan' model, not 'vibration'",
}


@pytest.mark.parametrize("case", list(REASONS))
def test_reload_refuses_a_corrupt_version_and_the_old_model_keeps_serving(
    api: tuple[Server, Settings], corrupt_versions: dict[str, tuple[str, str]], case: str
) -> None:
    server, settings = api
    domain, version = corrupt_versions[case]
    response = httpx.put(
        f"{server.url}/reload", json={"domain": domain, "version": version},
        headers=service_headers(settings), timeout=120,
    )  # fmt: skip
    assert response.status_code in (422, 503), response.text
    body = response.json()
    assert REASONS[case] in body["reason"], body["reason"]
    result = body["results"][0]
    assert result["refused"] and result["serving"]["version"] == "1"
    still_serving_v1(server.url, login(server.url, "operator"), domain)


def test_a_corrupt_champion_is_refused_by_a_plain_reload(
    api: tuple[Server, Settings],
    corrupt_versions: dict[str, tuple[str, str]],
    reliability_registry: ReliabilityRegistry,
) -> None:
    """The registry's champion itself is broken (a bad promotion): reload keeps the old one."""
    server, settings = api
    reg = registry_settings(reliability_registry.var_dir, reliability_registry.tracking_uri)
    _, version = corrupt_versions["truncated model file"]
    champion = registry.aliases(reg, "vibration")[registry.CHAMPION]
    registry.set_alias(reg, "vibration", registry.CHAMPION, version)
    try:
        response = httpx.put(f"{server.url}/reload", headers=service_headers(settings), timeout=120)
    finally:
        registry.set_alias(reg, "vibration", registry.CHAMPION, champion)
    assert response.status_code in (422, 503)
    results = {r["domain"]: r for r in response.json()["results"]}
    assert results["vibration"]["refused"] and results["vibration"]["serving"]["version"] == "1"
    assert not results["turbofan"].get("refused")  # the healthy domain reloaded fine
    still_serving_v1(server.url, login(server.url, "operator"), "vibration")
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'machine_health_reloads_total{domain="vibration",result="refused"}' in metrics
    assert "Traceback" not in server.log.read_text()
