"""The archive: GET /predictions, GET /predictions/{id}, POST /feedback, failure back-fill."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path, Query

from machine_health.api.deps import DbDep, Labeller, Reader, StateDep
from machine_health.api.json_body import api_router
from machine_health.api.schemas import (
    FailureRequest,
    FailureResponse,
    FeedbackRequest,
    FeedbackResponse,
    PredictionPage,
)
from machine_health.api.scoring import public_document
from machine_health.archive import repository
from machine_health.errors import InputError

router = api_router(tags=["archive"])

_SAFE = r"^[A-Za-z0-9_.:@-]+$"


@router.get("/predictions", response_model=PredictionPage)
async def list_predictions(
    db: DbDep,
    _: Reader,
    domain: Annotated[str | None, Query(max_length=32, pattern=_SAFE)] = None,
    asset_id: Annotated[str | None, Query(max_length=64, pattern=_SAFE)] = None,
    model_version: Annotated[str | None, Query(max_length=16, pattern=_SAFE)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Archived predictions, newest first, filtered and paginated."""
    docs = await repository.find_predictions(
        db, domain=domain, asset_id=asset_id, model_version=model_version,
        since=since, until=until, skip=offset, limit=limit,
    )  # fmt: skip
    return {
        "items": [public_document(d) for d in docs],
        "offset": offset,
        "limit": limit,
        "next_offset": offset + limit if len(docs) == limit else None,
    }


@router.get("/predictions/{prediction_id}")
async def read_prediction(
    prediction_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9]+$")],
    db: DbDep,
    _: Reader,
) -> dict[str, Any]:
    """One archived prediction with its input, output, model and label."""
    return public_document(await repository.get_prediction(db, prediction_id))


@router.post("/feedback", response_model=FeedbackResponse)
async def create_feedback(
    body: FeedbackRequest, db: DbDep, state: StateDep, caller: Labeller
) -> dict[str, Any]:
    """Record the inspected fault class of an archived vibration prediction."""
    doc = await repository.get_prediction(db, body.prediction_id)
    if doc["domain"] != "vibration":
        raise InputError(
            f"feedback labels vibration predictions; a {doc['domain']} prediction is labelled "
            "by POST /assets/{unit_id}/failure"
        )
    loaded = state.holder.loaded("vibration")
    labels = getattr(loaded.bundle, "labels", None) if loaded else None
    if labels and body.label not in labels:
        raise InputError(f"label: {body.label!r} is not one of {', '.join(labels)}")
    return await repository.set_label(
        db, body.prediction_id, domain="vibration", label=body.label, source="feedback",
        labelled_by=caller.username,
    )  # fmt: skip


@router.post("/assets/{unit_id}/failure", response_model=FailureResponse)
async def create_failure(
    unit_id: Annotated[str, Path(max_length=64, pattern=_SAFE)],
    body: FailureRequest,
    db: DbDep,
    caller: Labeller,
) -> dict[str, Any]:
    """Record a turbofan unit's failure cycle: back-fills the true RUL of its archived cycles."""
    return await repository.backfill_failure(
        db, unit_id, body.failure_cycle, labelled_by=caller.username, source="failure"
    )
