"""The app factory: `uvicorn --factory machine_health.api.app:create_app`.

Startup (lifespan): connect the async store client and create the indexes (a store that is down
does not stop the API: predictions are spooled; a background probe keeps the store's last known
state for /health and `machine_health_store_up`), open the spool and replay what a previous run
left, load every domain's @champion (smoke-tested) and its @shadow if any (followed every
MH_SHADOW_SYNC_S, `api/shadow.py`), start the micro-batchers, the shadow lanes, the background
explainer and the group-commit writer, and with several worker processes the reload follower
(`api/workers.py`). Shutdown
drains the writer and releases the spool.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from pymongo.asynchronous.database import AsyncDatabase

from machine_health import __version__, heap, telemetry
from machine_health.api import errors as api_errors
from machine_health.api import shadow
from machine_health.api.middleware import RequestContext
from machine_health.api.routes import archive, auth, models, ops, predict, reports, stats, users
from machine_health.api.scoring import Scorer
from machine_health.api.serving import ModelHolder
from machine_health.api.shadow import ShadowSync
from machine_health.api.workers import WorkerSync, sync_dir
from machine_health.archive import client as archive_client
from machine_health.archive import reports as archived_reports
from machine_health.archive.spool import Spool
from machine_health.archive.writer import ArchiveWriter
from machine_health.config import Settings, get_settings
from machine_health.domains import DOMAINS, get_domain
from machine_health.domains.base import Domain
from machine_health.errors import MachineHealthError, StoreError
from machine_health.logs import configure_logging

logger = logging.getLogger(__name__)

#: what the API needs: the JWT key (issue/verify user tokens) and the reload step's token
API_SECRETS = ("jwt_secret", "service_token")


#: how often the background probe pings the store (its answer feeds /health and a gauge)
STORE_PROBE_SECONDS = 2.0
#: longest a probe ping may take (a store that is down must not stall the probe)
STORE_PROBE_TIMEOUT_S = 2.0


@dataclass
class StoreHealth:
    """The store's last known state, kept by a background probe: reported, never routed on.

    Readiness does not depend on it (a replica with the store down still answers /predict,
    spooling), and /health only reads it (a liveness answer never waits for the store).
    """

    status: str = "unknown"  # ok, unreachable (or unknown before the first check)
    checked_at: datetime | None = None
    since: datetime | None = None  # when the status last changed
    error: str | None = None

    def record(self, ok: bool, error: str | None = None) -> None:
        now = datetime.now(UTC)
        status = "ok" if ok else "unreachable"
        if status != self.status:
            if ok and self.status == "unreachable":
                logger.info("store reachable again")
            elif not ok:
                logger.warning("store unreachable: %s", error)
            self.since = now
        self.status, self.checked_at, self.error = status, now, None if ok else error
        telemetry.STORE_UP.set(1 if ok else 0)

    def report(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "since": self.since.isoformat() if self.since else None,
            "error": self.error,
        }


async def probe_store(db: AsyncDatabase, health: StoreHealth, timeout_s: float) -> None:
    """Ping the store once and record the answer (any failure means unreachable)."""
    try:
        await asyncio.wait_for(db.command("ping"), timeout=timeout_s)
    except Exception as exc:  # every failure of a ping means "not reachable"
        health.record(False, f"{type(exc).__name__}: {str(exc)[:200]}")
    else:
        health.record(True)


async def store_probe_loop(
    db: AsyncDatabase, health: StoreHealth, interval_s: float, timeout_s: float
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await probe_store(db, health, timeout_s)


async def refresh_gauges(db: AsyncDatabase, domains: list[str]) -> None:
    """Publish the latest stored drift and performance reports of `domains` as gauges.

    Reports are written by `machine-health drift` / `performance` (pipeline or CLI); every
    replica reads them, so any replica's /metrics carries the same monitoring gauges.
    """
    publishers = {
        archived_reports.DRIFT: telemetry.publish_drift,
        archived_reports.PERFORMANCE: telemetry.publish_performance,
    }
    try:
        for domain in domains:
            for kind, publish in publishers.items():
                found = await archived_reports.latest_reports(db, kind, domain=domain, limit=1)
                if found:
                    publish(found[0])
    except Exception:  # a monitoring read must never take the API down; counted and logged
        telemetry.REPORTS_READ.labels("error").inc()
        logger.warning("cannot refresh monitoring gauges from the store", exc_info=True)
        return
    telemetry.REPORTS_READ.labels("ok").inc()


async def refresh_gauges_loop(db: AsyncDatabase, domains: list[str], interval_s: float) -> None:
    """`refresh_gauges` now and every `interval_s` seconds."""
    while True:
        await refresh_gauges(db, domains)
        await asyncio.sleep(interval_s)


@dataclass
class AppState:
    """Everything a request needs, built at startup and kept on `app.state.mh`."""

    settings: Settings
    client: Any
    db: AsyncDatabase
    holder: ModelHolder
    writer: ArchiveWriter
    scorer: Scorer
    workers: WorkerSync | None = None  # only with several worker processes (`serve --workers`)
    store: StoreHealth = field(default_factory=StoreHealth)
    shadow_sync: ShadowSync | None = None


def load_domains(names: list[str] | None = None) -> dict[str, Domain]:
    """The domain objects (an uninstallable domain is logged and left out)."""
    domains: dict[str, Domain] = {}
    for name in names or list(DOMAINS):
        try:
            domains[name] = get_domain(name)
        except (ImportError, AttributeError) as exc:
            logger.error("domain %s cannot be imported, not served: %s", name, exc)
    return domains


async def _startup(settings: Settings, domains: dict[str, Domain]) -> AppState:
    client = archive_client.async_client(settings)
    db = client[settings.mongodb_db]
    store = StoreHealth()
    try:
        await asyncio.to_thread(archive_client.prepare_archive, settings)
        store.record(True)
    except StoreError as exc:
        logger.warning("store unreachable at startup, predictions will be spooled: %s", exc)
        store.record(False, str(exc)[:200])
    spool = Spool(
        settings.spool_dir, owner=settings.replica_name, max_bytes=settings.spool_max_bytes
    )
    writer = ArchiveWriter(db[archive_client.PREDICTIONS], spool)
    await writer.start()
    holder = ModelHolder(settings, list(domains))
    for name in domains:
        try:
            await holder.load(name, settle=False)
        except MachineHealthError as exc:
            logger.warning("%s: no model served yet (%s)", name, exc)
    await shadow.sync_all(holder)  # a shadow the registry names now is scored from the start
    heap.watch_pauses()
    heap.settle()  # the loaded models leave the collector's walks (see machine_health.heap)
    scorer = Scorer(settings, db, domains, holder, writer)
    scorer.start()
    shadow_sync = ShadowSync(holder, settings)
    shadow_sync.start()
    workers = None
    if settings.workers > 1:  # a sibling worker may have reloaded: follow it, then keep up
        workers = WorkerSync(holder, sync_dir(settings, os.getppid()), settings.workers)
        await workers.start()
    return AppState(settings, client, db, holder, writer, scorer, workers, store, shadow_sync)


async def _shutdown(state: AppState) -> None:
    if state.shadow_sync is not None:
        await state.shadow_sync.close()
    if state.workers is not None:
        await state.workers.close()
    await state.scorer.close()
    await state.writer.close()
    await state.client.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for `settings` (default: the process settings, i.e. the MH_* environment)."""
    if settings is None:
        settings = get_settings()
        configure_logging(settings)
    # The API signs and verifies tokens: it refuses to start without real secrets (the UI and
    # most pipeline steps do not need them, so `Settings` alone does not require them).
    settings = settings.ensure_dev_secrets().require_secrets(*API_SECRETS)
    domains = load_domains()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.mh = await _startup(settings, domains)
        # Drift / live-performance gauges follow the reports the pipeline stores.
        refresher = asyncio.create_task(
            refresh_gauges_loop(app.state.mh.db, list(domains), settings.metrics_refresh_seconds)
        )
        timeout_s = min(STORE_PROBE_TIMEOUT_S, settings.store_timeout_ms / 1000)
        prober = asyncio.create_task(
            store_probe_loop(app.state.mh.db, app.state.mh.store, STORE_PROBE_SECONDS, timeout_s)
        )
        logger.info("API ready (replica %s)", settings.replica_name)
        try:
            yield
        finally:
            refresher.cancel()
            prober.cancel()
            await _shutdown(app.state.mh)

    app = FastAPI(
        title="machine-health",
        version=__version__,
        description="Predictive maintenance: vibration anomalies and turbofan remaining useful "
        "life. Every prediction is archived; `POST /token` for a bearer token.",
        lifespan=lifespan,
        responses=api_errors.ERROR_RESPONSES,
    )
    api_errors.install(app)
    routers = [
        auth.router,
        predict.build_router(domains, settings.data_dir, settings.predict_batch_limit),
        archive.router,
        ops.router,
        *(models.router, stats.router, reports.router),  # the UI's reads and admin
        users.router,  # user administration (admins only)
    ]
    for router in routers:
        # The routes themselves, not `include_router`: the instrumentator flattens included
        # routers on EVERY request to name its handler (~0.3 ms a request with ours).
        app.router.routes.extend(router.routes)
    if settings.bench_routes:
        ops.add_echo(app.router)
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=False
    )
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app
