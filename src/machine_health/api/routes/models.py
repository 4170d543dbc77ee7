"""GET /models, the gate report of a version; POST promote / rollback (admins only).

Promote and rollback move registry aliases only; the replicas serve the new @champion after
`PUT /reload` (the retrain DAG's last step, or the UI's reload button).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import Depends, Path
from pydantic import BaseModel, Field

from machine_health import registry
from machine_health.api.deps import CurrentUser, Reader, StateDep
from machine_health.api.json_body import api_router
from machine_health.api.security import Principal
from machine_health.errors import Forbidden, NotFound

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
        loaded = state.holder.loaded(domain)
        out[domain] = {
            "name": settings.model_name(domain),
            "aliases": {a: v["version"] for v in versions for a in v["aliases"]},
            "versions": versions,
            "served": loaded.info() if loaded else None,
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
