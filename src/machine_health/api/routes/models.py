"""GET /models, the gate report of a version; POST promote / rollback (admins only); the shadow:
start, compare, promote, drop.

Promote and rollback move registry aliases only; the replicas serve the new @champion after
`PUT /reload` (the retrain DAG's last step, or the UI's reload button). A shadow (`@shadow`,
api/shadow.py) is loaded here at once and by every other replica within MH_SHADOW_SYNC_S
(`machine-health models shadow` reloads them all and waits); its comparison with the champion
on the same labelled requests (monitoring/shadow.py) gates its promotion.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Path, Query
from pydantic import BaseModel, Field

from machine_health import registry
from machine_health.api.deps import CurrentUser, Reader, StateDep
from machine_health.api.json_body import api_router
from machine_health.api.routes.reports import json_safe
from machine_health.api.security import Principal
from machine_health.errors import Forbidden, NotFound
from machine_health.monitoring.shadow import promote_shadow, run_shadow_comparison

router = api_router(tags=["models"])

_DOMAIN = Path(max_length=32, pattern=r"^[a-z_]+$")
_VERSION = Path(max_length=16, pattern=r"^[0-9]+$")


def _admin(principal: CurrentUser) -> Principal:
    if principal.role != "admin":
        raise Forbidden(f"role {principal.role!r} may not move model aliases (admins only)")
    return principal


Admin = Annotated[Principal, Depends(_admin)]


class PromoteRequest(BaseModel):
    version: str = Field(pattern=r"^[0-9]+$", max_length=16, description="A registry version.")

    model_config = {"json_schema_extra": {"examples": [{"version": "2"}]}}


class PromoteShadowRequest(BaseModel):
    force: bool = Field(
        False, description="Promote even when the shadow is significantly worse on the field."
    )


def _known(state: Any, domain: str) -> str:
    if domain not in state.holder.domains:
        raise NotFound(
            f"unknown domain {domain!r}; known domains: {', '.join(state.holder.domains)}"
        )
    return domain


@router.get("/models")
async def list_models(state: StateDep, _: Reader) -> dict[str, Any]:
    """Per domain: registry versions with aliases and run metrics, and the version served here."""
    settings = state.settings
    out: dict[str, Any] = {}
    for domain in state.holder.domains:
        versions = await asyncio.to_thread(registry.list_versions, settings, domain)
        loaded, shadow = state.holder.loaded(domain), state.holder.shadow(domain)
        out[domain] = {
            "name": settings.model_name(domain),
            "aliases": {a: v["version"] for v in versions for a in v["aliases"]},
            "versions": versions,
            "served": loaded.info() if loaded else None,
            "shadow": shadow.info() if shadow else None,
        }
    return {"replica": settings.replica_name, "domains": out}


@router.get("/models/{domain}/versions/{version}/gate")
async def read_gate_report(
    domain: Annotated[str, _DOMAIN], version: Annotated[str, _VERSION], state: StateDep, _: Reader
) -> dict[str, Any]:
    """The gate report artifacts (JSON and markdown) of the run that registered a version."""
    texts = await asyncio.to_thread(
        registry.run_artifact_texts, state.settings, _known(state, domain), version, "gate"
    )
    if not texts:
        raise NotFound(f"{domain} v{version}: no gate report (registered outside the pipeline?)")
    reports: dict[str, Any] = {}
    markdown: dict[str, str] = {}
    for path, text in sorted(texts.items()):
        if path.endswith(".md"):
            markdown[path] = text
        else:
            reports[path] = json.loads(text)
    return {"domain": domain, "version": version, "json": reports, "markdown": markdown}


@router.post("/models/{domain}/promote")
async def promote_model(
    domain: Annotated[str, _DOMAIN], body: PromoteRequest, state: StateDep, _: Admin
) -> dict[str, Any]:
    """Move @champion to a version (the old champion becomes @previous); reload to serve it."""
    settings = state.settings
    await asyncio.to_thread(registry.resolve, settings, _known(state, domain), version=body.version)
    moved = await asyncio.to_thread(registry.promote, settings, domain, body.version)
    aliases = await asyncio.to_thread(registry.aliases, settings, domain)
    return {"domain": domain, "champion": moved, "aliases": aliases}


@router.post("/models/{domain}/rollback")
async def rollback_model(
    domain: Annotated[str, _DOMAIN], state: StateDep, _: Admin
) -> dict[str, Any]:
    """Move @champion back to @previous; reload to serve it."""
    settings = state.settings
    moved = await asyncio.to_thread(registry.rollback, settings, _known(state, domain))
    aliases = await asyncio.to_thread(registry.aliases, settings, domain)
    return {"domain": domain, "champion": moved, "aliases": aliases}


def _now() -> datetime:
    return datetime.now(UTC)


@router.put("/models/{domain}/shadow")
async def start_shadow(
    domain: Annotated[str, _DOMAIN], body: PromoteRequest, state: StateDep, _: Admin
) -> dict[str, Any]:
    """Point @shadow at a version: scored beside the champion on every archived request, never
    answering (this replica at once, the others within MH_SHADOW_SYNC_S)."""
    settings = state.settings
    moved = await asyncio.to_thread(
        registry.set_shadow, settings, _known(state, domain), body.version
    )
    here = await state.holder.sync_shadow(domain)
    return {"domain": domain, "shadow": moved, "replica": settings.replica_name,
            "loaded_here": here["new"], "others_within_s": settings.shadow_sync_s}  # fmt: skip


@router.delete("/models/{domain}/shadow")
async def drop_shadow(domain: Annotated[str, _DOMAIN], state: StateDep, _: Admin) -> dict[str, Any]:
    """Remove @shadow: no replica scores with it any more (this one at once)."""
    old = await asyncio.to_thread(registry.clear_shadow, state.settings, _known(state, domain))
    await state.holder.drop_shadow(domain)
    return {"domain": domain, "dropped": old, "replica": state.settings.replica_name}


@router.get("/models/{domain}/shadow")
async def read_shadow_comparison(
    domain: Annotated[str, _DOMAIN],
    state: StateDep,
    _: Reader,
    version: Annotated[str | None, Query(pattern=r"^[0-9]+$", max_length=16)] = None,
) -> dict[str, Any]:
    """Champion vs shadow on the same labelled requests (paired bootstrap, the gate's field
    rule), computed now from the archive."""
    report = await asyncio.to_thread(
        run_shadow_comparison, state.settings, _known(state, domain), now=_now(),
        version=version, store=False,
    )  # fmt: skip
    shadow = state.holder.shadow(domain)
    return json_safe({**report, "served_shadow": shadow.info() if shadow else None})


@router.post("/models/{domain}/shadow/promote")
async def promote_shadow_model(
    domain: Annotated[str, _DOMAIN], body: PromoteShadowRequest, state: StateDep, _: Admin
) -> dict[str, Any]:
    """Make the shadow the champion unless it is significantly worse on the same requests (409;
    `force` overrides); serves it here at once, the other replicas after `PUT /reload`."""
    settings = state.settings
    result = await asyncio.to_thread(
        promote_shadow, settings, _known(state, domain), now=_now(), force=body.force
    )
    here = await state.holder.load(domain)  # the shadow's version: no longer beside itself
    return json_safe({**result, "replica": settings.replica_name, "served_here": here["new"]})
