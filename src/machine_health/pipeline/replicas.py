"""Where the serving replicas are: every one of them must reload a new champion.

- local (`execution_mode=local`): the URLs of the setting `MH_SERVING_URLS`;
- cluster (`execution_mode=kubernetes`): the endpoints of the API Service's EndpointSlices
  (label `kubernetes.io/service-name`) that are not terminating, or, when no Service is named,
  the running pods matching `MH_SERVING_LABEL_SELECTOR`; read with the kubernetes client and the
  pod's in-cluster identity (its Role may only get/list pods and EndpointSlices of its namespace).

Ready or not: a replica that is not ready (its spool nearly full during a store outage, a model
still loading) is still a serving process that will be ready again with whatever it holds, so it
must reload the new champion too. Only terminating endpoints (a pod being deleted) are skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from machine_health.config import Settings
from machine_health.errors import ConfigurationError, PipelineError

logger = logging.getLogger(__name__)

_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address  # an IPv6 endpoint
    return f"http://{host}:{port}"


def _namespace(settings: Settings) -> str:
    if settings.kubernetes_namespace:
        return settings.kubernetes_namespace
    try:
        return _NAMESPACE_FILE.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            "set MH_KUBERNETES_NAMESPACE (no in-cluster namespace file found)"
        ) from exc


def _in_cluster_client() -> Any:
    from kubernetes import client, config

    config.load_incluster_config()
    return client.ApiClient()


def _slice_port(endpoint_slice: Any) -> int | None:
    ports = [p for p in (endpoint_slice.ports or []) if p.port]
    named = [p for p in ports if p.name == "http"]
    chosen = (named or ports or [None])[0]
    return int(chosen.port) if chosen is not None else None


def from_endpoint_slices(api_client: Any, namespace: str, service: str) -> list[str]:
    """URLs of the endpoints of `service` that are not terminating (ready or not)."""
    from kubernetes import client

    slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
        namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
    )
    urls = []
    for endpoint_slice in slices.items:
        port = _slice_port(endpoint_slice)
        if port is None or endpoint_slice.address_type == "FQDN":
            continue
        for endpoint in endpoint_slice.endpoints or []:
            # Unset conditions mean "not terminating" (the API's documented default).
            if endpoint.conditions is not None and endpoint.conditions.terminating:
                continue
            urls += [_url(address, port) for address in endpoint.addresses]
    return urls


def from_pods(api_client: Any, namespace: str, selector: str, port: int) -> list[str]:
    """URLs of the running pods matching `selector`, ready or not (not those being deleted)."""
    from kubernetes import client

    pods = client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=selector)
    urls = []
    for pod in pods.items:
        status = pod.status
        if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
            continue  # terminating
        if status.phase == "Running" and status.pod_ip:
            urls.append(_url(status.pod_ip, port))
    return urls


def kubernetes_replicas(settings: Settings, api_client: Any | None = None) -> list[str]:
    """The serving replicas as the Kubernetes API lists them now."""
    api_client = api_client or _in_cluster_client()
    namespace = _namespace(settings)
    if settings.serving_service:
        urls = from_endpoint_slices(api_client, namespace, settings.serving_service)
    elif settings.serving_label_selector:
        urls = from_pods(api_client, namespace, settings.serving_label_selector, settings.api_port)
    else:
        raise ConfigurationError(
            "kubernetes mode needs MH_SERVING_SERVICE or MH_SERVING_LABEL_SELECTOR"
        )
    return sorted(set(urls))


def serving_replicas(settings: Settings, api_client: Any | None = None) -> list[str]:
    """Every serving replica's base URL (PipelineError when there is none)."""
    if settings.execution_mode == "kubernetes":
        urls = kubernetes_replicas(settings, api_client)
    else:
        urls = [u.rstrip("/") for u in settings.serving_urls]
    if not urls:
        raise PipelineError(f"no serving replica found ({settings.execution_mode} mode)")
    logger.info("serving replicas: %s", ", ".join(urls))
    return urls
