"""The session's local cluster (tests/cluster/rig.py), set up once: see rig.py's docstring."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator

import pytest

from tests.cluster.apiserver import RecordedApiServer
from tests.cluster.kubelet import API_SERVER_PORT, NODE_IP, Kubelet, Network, expose_services
from tests.cluster.rig import (
    NAMESPACE,
    TOOLS,
    Cluster,
    Store,
    in_own_network_namespace,
    install,
    render,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster check runs pods as other users and namespaces: run it as root")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {missing}: `make cluster-check` installs bubblewrap (Debian)")
    if not in_own_network_namespace():
        pytest.fail("run through `make cluster-check` (pytest in a network namespace of its own)")
    workdir = tmp_path_factory.mktemp("cluster")
    workdir.chmod(0o755)
    objects = render(workdir)
    network = Network(f"mhc{os.getpid()}")
    network.up()
    kubelet = Kubelet(objects, network, workdir, NAMESPACE)
    kubelet.extra_env = {"KUBERNETES_SERVICE_HOST": NODE_IP,
                         "KUBERNETES_SERVICE_PORT": str(API_SERVER_PORT)}  # fmt: skip
    cluster = Cluster(kubelet, objects, workdir, admin_password=secrets.token_urlsafe(18))
    try:
        cluster.api_server = RecordedApiServer(kubelet, NODE_IP, API_SERVER_PORT,
                                               secrets.token_urlsafe(24))  # fmt: skip
        cluster.store = Store(kubelet, workdir)
        cluster.store.start()
        cluster.proxies = expose_services(kubelet)
        started = time.monotonic()
        install(cluster)
        cluster.timings["install_s"] = round(time.monotonic() - started, 1)
        yield cluster
    finally:
        kubelet.stop_all()
        for proxy in cluster.proxies:
            proxy.close()
        if cluster.api_server:
            cluster.api_server.close()
        if cluster.store is not None:
            cluster.store.stop()
        network.down()
        print(f"\ncluster check timings: {cluster.timings}", file=sys.stderr)
