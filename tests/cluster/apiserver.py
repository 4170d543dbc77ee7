"""MOCK of the Kubernetes API server: recorded EndpointSlice and Pod list answers, over HTTPS.

No API server can run here. The reload step finds the serving replicas with the real kubernetes
client and its real in-cluster configuration (KUBERNETES_SERVICE_HOST/PORT, the token and CA of
the mounted service account), so this answers exactly the two read calls it makes, built from
the pods the local kubelet runs (addresses, ready / serving / terminating from their last
readiness probe), and refuses a request without the mounted token. Everything else is 404.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.cluster.kubelet import Kubelet

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def write_service_account(folder: Path, host: str, namespace: str, token: str) -> tuple[Path, Path]:
    """A CA-signed serving certificate for `host` and the pod's service-account folder."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cluster-check")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "token").write_text(token)
    (folder / "namespace").write_text(namespace)
    key_file = folder.parent / "apiserver.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "ca.crt", key_file


class RecordedApiServer:
    """Serves the pods of `kubelet` as the API server would list them."""

    def __init__(self, kubelet: Kubelet, host: str, port: int, token: str) -> None:
        self.kubelet, self.token = kubelet, token
        self.requests: list[str] = []
        cert, key = write_service_account(kubelet.sa_dir, host, kubelet.namespace, token)
        handler = self._handler()
        self.server = ThreadingHTTPServer((host, port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def endpoint_slices(self, namespace: str, selector: dict[str, str]) -> dict[str, Any]:
        items = []
        for service in self.kubelet.objects.of_kind("Service"):
            name = service["metadata"]["name"]
            if selector.get(SERVICE_NAME_LABEL) not in (None, name):
                continue
            ports = [
                {"name": p.get("name"), "port": p.get("targetPort", p["port"]), "protocol": "TCP"}
                for p in service["spec"].get("ports") or []
            ]
            pods = self.kubelet.matching(service["spec"].get("selector") or {})
            for p in ports:
                if isinstance(p["port"], str):
                    p["port"] = pods[0].port(p["port"]) if pods else None
            endpoints = [
                {
                    "addresses": [pod.ip],
                    "conditions": {"ready": pod.ready, "serving": pod.ready, "terminating": False},
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": namespace},
                }
                for pod in pods
                if any(c.process and c.process.poll() is None for c in pod.containers)
            ]
            items.append({
                "metadata": {"name": f"{name}-local", "namespace": namespace,
                             "labels": {SERVICE_NAME_LABEL: name}},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            })  # fmt: skip
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": "1"}, "items": items}  # fmt: skip

    def pod_list(self, namespace: str, selector: dict[str, str]) -> dict[str, Any]:
        items = []
        for pod in self.kubelet.matching(selector):
            running = any(c.process and c.process.poll() is None for c in pod.containers)
            items.append({
                "metadata": {"name": pod.name, "namespace": namespace, "labels": pod.labels},
                "status": {
                    "phase": "Running" if running else "Succeeded",
                    "podIP": pod.ip,
                    "conditions": [{"type": "Ready", "status": str(pod.ready)}],
                },
            })  # fmt: skip
        return {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() != "bearer" or token != server.token:
                    return self._send(401, {"kind": "Status", "code": 401})
                url = urlparse(self.path)
                query = parse_qs(url.query)
                selector = dict(
                    part.split("=", 1)
                    for part in (query.get("labelSelector") or [""])[0].split(",")
                    if "=" in part
                )
                parts = url.path.strip("/").split("/")
                if (
                    parts[:3] == ["apis", "discovery.k8s.io", "v1"]
                    and parts[-1] == "endpointslices"
                ):
                    return self._send(200, server.endpoint_slices(parts[4], selector))
                if parts[:2] == ["api", "v1"] and parts[-1] == "pods":
                    return self._send(200, server.pod_list(parts[3], selector))
                return self._send(404, {"kind": "Status", "code": 404})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
