"""Registered artifacts are pinned and their model files allow-listed (real MLflow store, real
uvicorn): a version whose files change on disk after registration is refused at load, and so is
a skops file holding a type outside the allow-list; the old model keeps serving both times.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import numpy as np
import pytest
import skops.io
from mlflow.tracking import MlflowClient
from sklearn.preprocessing import FunctionTransformer

from machine_health import registry
from machine_health.config import Settings
from tests.support.models import register_version
from tests.support.reliability.harness import service_headers
from tests.support.reliability.scenarios import (
    ReliabilityRegistry,
    _Tampered,
    registry_settings,
    serve_with_users,
    still_serving_v1,
)
from tests.support.servers import Server
from tests.support.users import login


@pytest.fixture(scope="module")
def reg(reliability_registry: ReliabilityRegistry) -> Settings:
    return registry_settings(reliability_registry.var_dir, reliability_registry.tracking_uri)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    store_uri: str,
    reliability_registry: ReliabilityRegistry,
) -> Iterator[tuple[Server, Settings]]:
    yield from serve_with_users(tmp_path_factory, "integrity", store_uri, reliability_registry)


def _stored_bundle_dir(reg: Settings, domain: str, version: str) -> Path:
    """Where the registry keeps a version's bundle files on disk."""
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    mv = client.get_model_version(reg.model_name(domain), version)
    model_id = mv.model_id or str(mv.source).removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    return Path(unquote(urlparse(location).path)) / "artifacts" / "bundle"


def _reload(server: Server, settings: Settings, domain: str, version: str) -> httpx.Response:
    return httpx.put(
        f"{server.url}/reload", json={"domain": domain, "version": version},
        headers=service_headers(settings), timeout=120,
    )  # fmt: skip


def _refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code in (422, 503), response.text
    body = response.json()
    assert reason in body["reason"], body["reason"]
    result = body["results"][0]
    assert result["refused"] and result["serving"]["version"] == "1"


def test_a_version_whose_files_changed_after_registration_is_refused(
    api: tuple[Server, Settings], reg: Settings
) -> None:
    server, settings = api
    bundle, _ = registry.load(reg, "vibration", version="1")
    version = register_version(reg, bundle, f"pin-{secrets.token_hex(3)}", "vibration")
    tags = (
        MlflowClient(tracking_uri=reg.tracking_uri)
        .get_model_version(reg.model_name("vibration"), version)
        .tags
    )
    assert len(tags.get("artifact_sha256", "")) == 64  # recorded at registration
    registry.load(reg, "vibration", version=version)  # untouched: it loads
    # Someone with write access to the artifact store edits the stored bundle: a threshold that
    # still loads and predicts, so only the digest can tell.
    config = _stored_bundle_dir(reg, "vibration", version) / "vibration.json"
    meta = json.loads(config.read_text())
    meta["threshold"] = float(meta["threshold"]) * 1000
    config.write_text(json.dumps(meta, indent=2))
    _refused(_reload(server, settings, "vibration", version), "artifact digest mismatch")
    still_serving_v1(server.url, login(server.url, "operator"), "vibration")


def _with_foreign_type(bundle_dir: Path) -> None:
    """Re-save the bundle's model file with one more object: numpy.exp as a function."""
    models_file = bundle_dir / "models.skops"
    models: dict[str, Any] = skops.io.load(
        models_file, trusted=skops.io.get_untrusted_types(file=models_file)
    )
    models["extra"] = FunctionTransformer(func=np.exp)
    skops.io.dump(models, models_file)


def test_a_model_file_with_a_type_outside_the_allow_list_is_refused(
    api: tuple[Server, Settings], reg: Settings
) -> None:
    server, settings = api
    bundle, _ = registry.load(reg, "vibration", version="1")
    version = register_version(
        reg, _Tampered(bundle, _with_foreign_type), f"foreign-{secrets.token_hex(3)}", "vibration"
    )
    _refused(_reload(server, settings, "vibration", version), "outside the allow-list")
    still_serving_v1(server.url, login(server.url, "operator"), "vibration")
