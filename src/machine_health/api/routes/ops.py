"""GET /, /health, /ready, /version; PUT /reload; POST /echo (benchmark base, off by default)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import HTMLResponse, JSONResponse

from machine_health import __version__
from machine_health.api.deps import Predictor, Reloader, StateDep
from machine_health.api.errors import status_of
from machine_health.api.json_body import FastJSONRoute, api_router
from machine_health.api.schemas import ReloadRequest
from machine_health.archive.spool import Spool
from machine_health.errors import MachineHealthError, NotFound
from machine_health.registry import Slot

router = api_router(tags=["operations"])

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>machine-health API</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;line-height:1.5}}
code{{background:#eee;padding:0 .2rem}}</style></head>
<body><h1>machine-health</h1>
<p>Predictive maintenance API, replica <code>{replica}</code>, version {version}.
Serving: {models}.</p>
<ul>
<li><a href="docs">API documentation (Swagger UI)</a> and <a href="redoc">ReDoc</a></li>
<li><a href="openapi.json">OpenAPI schema</a></li>
<li><a href="version">Served model versions</a></li>
<li><a href="health">Health</a> and <a href="ready">readiness</a></li>
<li><a href="metrics">Prometheus metrics</a></li>
</ul></body></html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def read_index(state: StateDep) -> str:
    """A small HTML page with links."""
    models = ", ".join(
        f"{d} v{m.ref.version}" if (m := state.holder.loaded(d)) else f"{d} (none)"
        for d in state.holder.domains
    )
    return _INDEX.format(replica=state.settings.replica_name, version=__version__, models=models)


@router.get("/health")
async def read_health(state: StateDep) -> dict[str, Any]:
    """Liveness: the process answers; also the store's last known state (never waited for)."""
    return {
        "status": "ok",
        "replica": state.settings.replica_name,
        "store": state.store.report(),
        "spool_depth": state.writer.spool.depth,
    }


#: share of MH_SPOOL_MAX_BYTES kept free for the requests in flight: above the rest, not ready
SPOOL_HEADROOM = 0.05


def spool_usage(spool: Spool) -> tuple[int, bool]:
    """Bytes waiting in this process's spool file, and whether it is (nearly) full or closed."""
    own = spool.own
    if own is None:
        return 0, True
    pending = own.pending_bytes
    return pending, pending >= spool.max_bytes * (1 - SPOOL_HEADROOM)


@router.get("/ready")
async def read_ready(state: StateDep) -> JSONResponse:
    """Readiness = can answer /predict: every domain's model loaded and room in the spool.

    The store is reported (`store`: its last known state), not routed on: while it is down the
    replica still predicts and spools, so it stays in the Service.
    """
    missing = [d for d in state.holder.domains if state.holder.loaded(d) is None]
    spool_bytes, spool_full = spool_usage(state.writer.spool)
    ready = not missing and not spool_full
    body = {
        "ready": ready,
        "models_missing": missing,
        "spool_full": spool_full,
        "spool_bytes": spool_bytes,
        "spool_max_bytes": state.writer.spool.max_bytes,
        "spool_depth": state.writer.spool.depth,
        "store": state.store.status,
        "replica": state.settings.replica_name,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/version")
async def read_version(state: StateDep) -> dict[str, Any]:
    """Per domain, the served model name, version, alias and load time, and its shadow (scored
    beside it, never answering) if any; this replica's name.

    `pid` is the worker process that answered. With several workers, `workers` tells what each
    live worker serves and whether they all `converged` on the same versions (after a reload).
    """
    models, shadows = {}, {}
    for domain in state.holder.domains:
        loaded, shadow = state.holder.loaded(domain), state.holder.shadow(domain)
        models[domain] = loaded.info() if loaded else None
        shadows[domain] = shadow.info() if shadow else None
    body = {
        "replica": state.settings.replica_name,
        "pid": os.getpid(),
        "app_version": __version__,
        "models": models,
        "shadows": shadows,
    }
    if state.workers is not None:
        body["workers"] = await state.workers.status()
    return body


@router.put("/reload")
async def update_models(
    state: StateDep,
    _: Reloader,
    body: ReloadRequest | None = Body(None),
    domain: str | None = Query(None, max_length=32),
    version: str | None = Query(None, pattern=r"^[0-9]+$"),
    alias: str | None = Query(None, pattern=r"^[A-Za-z0-9_-]+$"),
    slot: Slot = Query("champion"),
) -> JSONResponse:
    """Load @champion (or a version) for one or all domains; smoke-tested, swapped atomically.

    `slot=shadow`: load the version @shadow names as the domain's shadow (scored beside the
    champion, never answering), or drop the shadow when the registry names none."""
    request = body or ReloadRequest(domain=domain, version=version, alias=alias, slot=slot)
    if request.domain is not None and request.domain not in state.holder.domains:
        raise NotFound(f"unknown domain {request.domain!r}")
    domains = [request.domain] if request.domain else state.holder.domains
    if request.version is not None and len(domains) != 1:
        raise NotFound("a version needs one domain (versions are per domain)")
    results: list[dict[str, Any]] = []
    refused: list[MachineHealthError] = []
    for name in domains:
        try:
            if request.slot == "shadow" and request.version is None and request.alias is None:
                results.append(await state.holder.sync_shadow(name))
                continue
            alias = request.alias or request.slot
            loaded = await state.holder.load(
                name, alias=alias, version=request.version, slot=request.slot
            )
            results.append(loaded)
        except MachineHealthError as exc:
            refused.append(exc)
            holding = state.holder.loaded if request.slot == "champion" else state.holder.shadow
            current = holding(name)
            results.append(
                {
                    "domain": name,
                    "slot": request.slot,
                    "refused": True,
                    "reason": str(exc),
                    "serving": current.info() if current else None,
                }
            )
    if state.workers is not None:  # the other workers of this replica follow what loaded here
        await state.workers.record(results)
    body_out = {"replica": state.settings.replica_name, "results": results}
    if not refused:
        return JSONResponse(body_out)
    status, kind = status_of(refused[0])
    reason = "; ".join(f"{r['domain']}: {r['reason']}" for r in results if r.get("refused"))
    return JSONResponse({"error": kind, "reason": reason, **body_out}, status_code=status)


async def create_echo(body: dict[str, Any], _: Predictor) -> dict[str, Any]:
    """Return the JSON body as it came (the load benchmark's baseline route)."""
    return body


def add_echo(router_: APIRouter) -> None:
    router_.add_api_route(
        "/echo", create_echo, methods=["POST"], include_in_schema=False,
        route_class_override=FastJSONRoute,
    )  # fmt: skip
