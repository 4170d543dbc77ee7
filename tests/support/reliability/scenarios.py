"""The fault scenarios, sized by the caller: small in `make test`, longer in `make bench`.

Each scenario owns a store, an API and a registry (built by `build_registry` from real trained
bundles), runs bounded traffic through one fault and returns a `harness.Report`; its
`violations` list every broken guarantee, so a test asserts it is empty and the benchmark prints
the figures beside it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.base import BUNDLE_MANIFEST, ModelBundle
from tests.support.models import TrainedModels, register_version
from tests.support.paths import DATA_DIR
from tests.support.reliability.harness import (
    Report,
    Traffic,
    account,
    moves_only_along,
    plan_requests,
    service_headers,
    version_sequences,
)
from tests.support.servers import Server, start_uvicorn, wait_for
from tests.support.settings import make_settings
from tests.support.store import Store, spool_empty
from tests.support.users import create_users, login

# What a client may meet while the API process is dead or restarting (then retried).
TRANSPORT_ERRORS = {"ConnectError", "ReadError", "RemoteProtocolError", "WriteError"}


@dataclass(frozen=True)
class Scale:
    """How much traffic a scenario sends: bounded requests at a paced rate."""

    total: int
    rate: float
    workers: int = 6
    turbofan_workers: int = 2
    outage_s: float = 3.0


FAST = Scale(total=160, rate=16.0)


@dataclass(frozen=True)
class ReliabilityRegistry:
    """A private MLflow registry: vibration v1 @champion and v2 @challenger, turbofan v1, v1 of
    every other domain."""

    tracking_uri: str
    var_dir: Path


def registry_settings(var_dir: Path, tracking_uri: str | None = None) -> Settings:
    return Settings(
        _env_file=None, env="test", var_dir=var_dir, data_dir=DATA_DIR,
        mlflow_tracking_uri=tracking_uri, jwt_secret=secrets.token_urlsafe(48),
        service_token=secrets.token_urlsafe(48),
    )  # fmt: skip


class _Tampered:
    """A real bundle whose saved directory is altered after saving (a corrupt registry entry)."""

    def __init__(self, bundle: ModelBundle, tamper: Callable[[Path], None]) -> None:
        self.bundle, self.tamper, self.domain = bundle, tamper, bundle.domain

    def save(self, path: Path) -> Path:
        out = self.bundle.save(path)
        self.tamper(out)
        return out


def truncate_largest_file(bundle_dir: Path) -> None:
    """Cut the biggest file of a bundle (the fitted model) to half its bytes."""
    files = [p for p in bundle_dir.rglob("*") if p.is_file() and p.name != BUNDLE_MANIFEST]
    largest = max(files, key=lambda p: p.stat().st_size)
    data = largest.read_bytes()
    largest.write_bytes(data[: len(data) // 2])


def foreign_class(bundle_dir: Path) -> None:
    """Point the manifest at a class outside the project's domains (code from the registry)."""
    manifest_path = bundle_dir / BUNDLE_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["class"] = "builtins:eval"
    manifest_path.write_text(json.dumps(manifest))


def build_registry(var_dir: Path, source: TrainedModels) -> ReliabilityRegistry:
    """Copy the session's trained bundles into a private registry (no training)."""
    src = registry_settings(var_dir.parent / "source-var", source.tracking_uri)
    dst = registry_settings(var_dir)
    vibration, _ = registry.load(src, "vibration", version=source.vibration_version)
    turbofan, _ = registry.load(src, "turbofan", version=source.turbofan_version)
    register_version(
        dst, vibration, "reliability-vibration-1", "vibration", aliases=(registry.CHAMPION,)
    )
    register_version(
        dst, vibration, "reliability-vibration-2", "vibration", aliases=(registry.CHALLENGER,)
    )
    register_version(
        dst, turbofan, "reliability-turbofan-1", "turbofan", aliases=(registry.CHAMPION,)
    )
    for domain, version in source.others:  # every other registered domain: served, untouched
        bundle, _ = registry.load(src, domain, version=version)
        register_version(
            dst, bundle, f"reliability-{domain}-1", domain, aliases=(registry.CHAMPION,)
        )
    return ReliabilityRegistry(tracking_uri=dst.tracking_uri, var_dir=var_dir)


# --- running one scenario ----------------------------------------------------------------------
@dataclass
class Rig:
    store: Store
    settings: Settings
    server: Server
    headers: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])


def start_rig(root: Path, reg: ReliabilityRegistry) -> Rig:
    store = Store(root).start()
    settings = make_settings(
        root, store.uri, mlflow_tracking_uri=reg.tracking_uri, store_timeout_ms=500
    )
    create_users(settings)
    server = start_uvicorn(settings, root / "logs", timeout_s=120)
    return Rig(store, settings, server, login(server.url, "operator"))


def _start_traffic(rig: Rig, tag: str, scale: Scale) -> Traffic:
    """Paced traffic against the rig's API, returned once a quarter of it is acknowledged."""
    plan = plan_requests(
        DATA_DIR, tag, total=scale.total, workers=scale.workers,
        turbofan_workers=scale.turbofan_workers,
    )  # fmt: skip
    traffic = Traffic(rig.server.url, rig.headers, plan, rate=scale.rate).start()
    wait_for(lambda: traffic.acknowledged() >= scale.total // 4, 120, "traffic before")
    return traffic


def _finish(rig: Rig, traffic: Traffic, scale: Scale) -> None:
    traffic.join(scale.total / scale.rate + 180)
    wait_for(lambda: spool_empty(rig.server.url), 60, "the spool to drain into the store")


def run_store_outage(root: Path, reg: ReliabilityRegistry, scale: Scale = FAST) -> Report:
    """Fault 1: SIGKILL the store for `outage_s` seconds under traffic, then restart it."""
    rig = start_rig(root, reg)
    try:
        traffic = _start_traffic(rig, "outage", scale)
        rig.store.kill()
        killed_at = time.monotonic()
        time.sleep(scale.outage_s)
        spooled_in_outage = traffic.acknowledged("spooled")
        rig.store.start()
        restarted_at = time.monotonic()
        _finish(rig, traffic, scale)
        report = account(
            "store killed and restarted", traffic.outcomes, rig.store.uri,
            rig.settings.mongodb_db, elapsed_s=time.monotonic() - traffic.started_at,
        )  # fmt: skip
    finally:
        rig.server.stop()
        rig.store.stop()
    after = sum(
        1 for o in report.outcomes if o.answer and o.answer["archived"] == "archived"
        and o.sent_at > restarted_at
    )  # fmt: skip
    report.figures.update(
        outage_s=round(restarted_at - killed_at, 1), acknowledged_during_outage=spooled_in_outage,
        archived_directly_after_restart=after,
    )  # fmt: skip
    if spooled_in_outage == 0:
        report.violations.append("no prediction was answered while the store was down")
    if after == 0:
        report.violations.append("no traffic reached the store directly after its restart")
    _single_version(report)
    return report


def run_api_kill(
    root: Path, reg: ReliabilityRegistry, scale: Scale = FAST, *, with_spool: bool = True
) -> Report:
    """Fault 2: SIGKILL the API mid-traffic and restart it on the same port; `with_spool`: the
    store is down first, so that the API dies with records waiting in its spool."""
    rig = start_rig(root, reg)
    restarted: Server | None = None
    try:
        traffic = _start_traffic(rig, "apikill", scale)
        if with_spool:
            rig.store.kill()
            wait_for(lambda: traffic.acknowledged("spooled") >= 3, 60, "spooled answers")
        rig.server.kill()
        killed_at = time.monotonic()
        spool_files = sorted(rig.settings.spool_dir.glob("spool-*.jsonl"))
        left_bytes = sum(f.stat().st_size for f in spool_files)
        if with_spool:
            rig.store.start()
        restarted = start_uvicorn(rig.settings, root / "logs", port=rig.port, timeout_s=120)
        back_at = time.monotonic()
        _finish(Rig(rig.store, rig.settings, restarted, rig.headers), traffic, scale)
        report = account(
            "API SIGKILLed and restarted" + (" (store down, spool left)" if with_spool else ""),
            traffic.outcomes, rig.store.uri,
            rig.settings.mongodb_db, expected_failures=set(),
            elapsed_s=time.monotonic() - traffic.started_at,
        )  # fmt: skip
    finally:
        rig.server.stop()
        if restarted is not None:
            restarted.stop()
        rig.store.stop()
    report.figures.update(
        api_down_s=round(back_at - killed_at, 1), spool_bytes_left_by_killed_api=left_bytes,
    )  # fmt: skip
    if with_spool and left_bytes == 0:
        report.violations.append("the killed API left no spool behind (the fault was too mild)")
    leftovers = [f.name for f in spool_files if f.exists()]
    if leftovers:
        report.violations.append(f"spool files of the killed API still exist: {leftovers}")
    odd = {
        s for o in report.outcomes for s in o.statuses[:-1]
        if s not in TRANSPORT_ERRORS | {"503"}
    }  # fmt: skip
    if odd:
        report.violations.append(f"retried statuses other than transport errors/503: {odd}")
    _single_version(report)
    return report


def _reload(url: str, settings: Settings) -> tuple[dict[str, Any], float, float]:
    started = time.monotonic()
    response = httpx.put(
        f"{url}/reload", json={"domain": "vibration"}, headers=service_headers(settings),
        timeout=120,
    )  # fmt: skip
    if response.status_code != 200:
        raise AssertionError(f"reload refused: {response.status_code} {response.text}")
    return response.json()["results"][0], started, time.monotonic()


def run_reload_rollback(root: Path, reg: ReliabilityRegistry, scale: Scale = FAST) -> Report:
    """Fault 3: promote v2 and reload under traffic, then roll back to v1 and reload again."""
    rig = start_rig(root, reg)
    reg_settings = registry_settings(reg.var_dir, reg.tracking_uri)
    try:
        before = registry.aliases(reg_settings, "vibration")
        traffic = _start_traffic(rig, "reload", scale)
        registry.promote(reg_settings, "vibration", before[registry.CHALLENGER])
        forward, t0, t1 = _reload(rig.server.url, rig.settings)
        wait_for(lambda: traffic.acknowledged() >= scale.total * 3 // 5, 120, "traffic on v2")
        registry.rollback(reg_settings, "vibration")
        back, t2, t3 = _reload(rig.server.url, rig.settings)
        _finish(rig, traffic, scale)
        served = httpx.get(f"{rig.server.url}/version", timeout=10).json()["models"]
        report = account(
            "reload and rollback", traffic.outcomes, rig.store.uri, rig.settings.mongodb_db,
            elapsed_s=time.monotonic() - traffic.started_at,
        )  # fmt: skip
    finally:
        rig.server.stop()
        rig.store.stop()
        if registry.aliases(reg_settings, "vibration").get(registry.CHAMPION) != "1":
            registry.set_alias(reg_settings, "vibration", registry.CHAMPION, "1")
    old, new = before[registry.CHAMPION], before[registry.CHALLENGER]
    v = report.violations
    if (forward["old"]["version"], forward["new"]["version"]) != (old, new):
        v.append(
            f"the promotion reload went {forward['old']['version']}->{forward['new']['version']}"
        )
    if back["new"]["version"] != old:
        v.append(f"the rollback reload served v{back['new']['version']}, not v{old}")
    if served["vibration"]["version"] != old:
        v.append(f"/version says v{served['vibration']['version']} after the rollback")
    vib = [o for o in report.outcomes if o.planned.domain == "vibration" and o.answer]
    phases = {
        "v_old before the promotion": ([o for o in vib if o.done_at < t0], old),
        "v_new between the reloads": ([o for o in vib if o.sent_at > t1 and o.done_at < t2], new),
        "v_old after the rollback": ([o for o in vib if o.sent_at > t3], old),
    }
    for name, (outcomes, version) in phases.items():
        wrong = [o.version for o in outcomes if o.version != version]
        if not outcomes:
            v.append(f"no traffic {name}")
        elif wrong:
            v.append(f"{len(wrong)} answers {name} came from another version: {set(wrong)}")
        report.figures[f"answers {name}"] = len(outcomes)
    v += moves_only_along(version_sequences(report.outcomes, "vibration"), [old, new, old])
    v += moves_only_along(version_sequences(report.outcomes, "turbofan"), ["1"])
    report.figures["reload_s"] = [round(t1 - t0, 2), round(t3 - t2, 2)]
    return report


def _single_version(report: Report) -> None:
    """Without a reload, every client sees one version per domain for the whole run."""
    for domain in ("vibration", "turbofan"):
        seqs = version_sequences(report.outcomes, domain)
        versions = {v for seq in seqs.values() for v in seq}
        if len(versions) > 1:
            report.violations.append(f"{domain} answered by several versions: {versions}")


def serve_with_users(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    store_uri: str,
    registry: ReliabilityRegistry,
    **overrides: Any,
) -> Iterator[tuple[Server, Settings]]:
    """A real uvicorn serving `registry`, with one user per role; stopped after.

    For a module's `api` fixture: `yield from serve_with_users(...)`.
    """
    tmp = tmp_path_factory.mktemp(name)
    settings = make_settings(tmp, store_uri, mlflow_tracking_uri=registry.tracking_uri, **overrides)
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs", timeout_s=120)
    try:
        yield server, settings
    finally:
        server.stop()


def still_serving_v1(url: str, headers: dict[str, str], domain: str) -> None:
    """Version 1 of `domain` is what `url` serves and scores with."""
    served = httpx.get(f"{url}/version", timeout=10).json()["models"][domain]
    assert served["version"] == "1"
    body: dict[str, Any] = get_domain(domain).example_input(DATA_DIR)
    if domain == "turbofan":
        body = {**body, "unit_id": f"corrupt-{secrets.token_hex(4)}", "cycle": 1}
    answer = httpx.post(f"{url}/predict/{domain}", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200 and answer.json()["model"]["version"] == "1", answer.text
