"""Replica discovery with the real kubernetes client against a FAKE Kubernetes API server.

No cluster can run here: `FakeKubernetesApi` (a MOCK of the Kubernetes API) is a small local
HTTP server answering the two list calls the reload step makes (EndpointSlices of a Service,
pods by label) with recorded objects in the shape of the Kubernetes API, and recording the
requests it received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from kubernetes import client
from machine_health.config import Settings
from machine_health.errors import ConfigurationError, PipelineError
from machine_health.pipeline.replicas import serving_replicas

SLICES = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSliceList",
    "metadata": {"resourceVersion": "1"},
    "items": [
        {
            "metadata": {"name": "mh-api-abc", "labels": {"kubernetes.io/service-name": "mh-api"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9100}, {"name": "http", "port": 8000}],
            "endpoints": [
                {
                    "addresses": ["10.42.0.11"],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                },
                {"addresses": ["10.42.0.12"], "conditions": {"ready": True}},
                # not ready (spool nearly full, or still loading) but not going away: it must
                # reload the new champion too, or it serves the old one once ready again
                {
                    "addresses": ["10.42.0.13"],
                    "conditions": {"ready": False, "serving": False, "terminating": False},
                },
                # terminating (its pod is being deleted): skipped, ready-to-serve or not
                {
                    "addresses": ["10.42.0.14"],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                },
                {
                    "addresses": ["10.42.0.15"],
                    "conditions": {"ready": False, "serving": False, "terminating": True},
                },
            ],
        },
        {
            "metadata": {"name": "mh-api-v6", "labels": {"kubernetes.io/service-name": "mh-api"}},
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8000}],
            "endpoints": [{"addresses": ["fd00::11"]}],  # no conditions = ready
        },
    ],
}
PODS = {
    "apiVersion": "v1",
    "kind": "PodList",
    "metadata": {"resourceVersion": "1"},
    "items": [
        {
            "metadata": {"name": "api-1"},
            "status": {"phase": "Running", "podIP": "10.42.1.5",
                       "conditions": [{"type": "Ready", "status": "True"}]},
        },
        {
            "metadata": {"name": "api-2"},  # running, not ready (spool full): reloads too
            "status": {"phase": "Running", "podIP": "10.42.1.7",
                       "conditions": [{"type": "Ready", "status": "False"}]},
        },
        {
            "metadata": {"name": "api-3"},  # not started yet: loads @champion when it starts
            "status": {"phase": "Pending", "podIP": "10.42.1.6",
                       "conditions": [{"type": "Ready", "status": "False"}]},
        },
        {
            "metadata": {"name": "api-4", "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Running", "podIP": "10.42.1.8",
                       "conditions": [{"type": "Ready", "status": "False"}]},
        },
    ],
}  # fmt: skip


class FakeKubernetesApi(ThreadingHTTPServer):
    """Answers list EndpointSlices / list pods of one namespace; records the requests."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, list[str]]]] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubernetesApi

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.requests.append((url.path, parse_qs(url.query)))
        if url.path == "/apis/discovery.k8s.io/v1/namespaces/mh/endpointslices":
            body, status = SLICES, 200
        elif url.path == "/api/v1/namespaces/mh/pods":
            body, status = PODS, 200
        else:
            body, status = {"kind": "Status", "status": "Failure", "code": 404}, 404
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[FakeKubernetesApi]:
    server = FakeKubernetesApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def api_client(server: FakeKubernetesApi) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    return client.ApiClient(configuration)


def k8s_settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(
        _env_file=None, var_dir=tmp_path, execution_mode="kubernetes",
        kubernetes_namespace="mh", **values,
    )  # fmt: skip


def test_replicas_from_endpoint_slices(tmp_path: Path, fake_api: FakeKubernetesApi) -> None:
    settings = k8s_settings(tmp_path, serving_service="mh-api")
    urls = serving_replicas(settings, api_client(fake_api))
    assert urls == [
        "http://10.42.0.11:8000", "http://10.42.0.12:8000", "http://10.42.0.13:8000",
        "http://[fd00::11]:8000",
    ]  # fmt: skip
    path, query = fake_api.requests[-1]
    assert path == "/apis/discovery.k8s.io/v1/namespaces/mh/endpointslices"
    assert query["labelSelector"] == ["kubernetes.io/service-name=mh-api"]


def test_replicas_from_pods_by_label(tmp_path: Path, fake_api: FakeKubernetesApi) -> None:
    selector = "app.kubernetes.io/name=machine-health,app.kubernetes.io/component=api"
    settings = k8s_settings(tmp_path, serving_label_selector=selector, api_port=8000)
    urls = serving_replicas(settings, api_client(fake_api))
    assert urls == ["http://10.42.1.5:8000", "http://10.42.1.7:8000"]
    path, query = fake_api.requests[-1]
    assert path == "/api/v1/namespaces/mh/pods"
    assert query["labelSelector"] == [selector]


def test_kubernetes_mode_needs_a_service_or_selector(
    tmp_path: Path, fake_api: FakeKubernetesApi
) -> None:
    with pytest.raises(ConfigurationError, match="MH_SERVING_SERVICE"):
        serving_replicas(k8s_settings(tmp_path), api_client(fake_api))


def test_local_mode_uses_the_serving_urls_setting(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, var_dir=tmp_path, serving_urls="http://127.0.0.1:8001/, http://h:8002"
    )
    assert serving_replicas(settings) == ["http://127.0.0.1:8001", "http://h:8002"]
    with pytest.raises(PipelineError, match="no serving replica"):
        serving_replicas(settings.model_copy(update={"serving_urls": []}))
