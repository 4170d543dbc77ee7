"""GET /reports/{kind}: the monitoring reports (drift, live performance, retrain triggers, and
champion vs shadow on the same requests)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import Query

from machine_health.api.deps import DbDep, Reader
from machine_health.api.json_body import api_router
from machine_health.archive.reports import latest_reports

router = api_router(tags=["monitoring"])


def json_safe(value: Any) -> Any:
    """NaN/infinity (a KS p-value on constant inputs) as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@router.get("/reports/{kind}")
async def list_reports(
    kind: Literal["drift", "performance", "retrain_trigger", "shadow"],
    db: DbDep,
    _: Reader,
    domain: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> dict[str, Any]:
    """Stored reports of one kind (and domain), newest first."""
    items = await latest_reports(db, kind, domain=domain, limit=limit)
    return {"kind": kind, "domain": domain, "items": [json_safe(r) for r in items]}
