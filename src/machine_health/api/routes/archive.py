"""The archive: GET /predictions, GET /predictions/{id}, POST /feedback, failure back-fill,
and an admin's repair of a unit (DELETE /assets/{unit_id}/cycles)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path, Query

from machine_health.api.deps import CurrentUser, DbDep, Labeller, Reader, SettingsDep, StateDep
from machine_health.api.json_body import api_router
from machine_health.api.schemas import (
    INT64_MAX,
    ClientDatetime,
    FailureRequest,
    FailureResponse,
    FeedbackRequest,
    FeedbackResponse,
    PredictionPage,
    PurgeResponse,
)
from machine_health.api.scoring import is_sequence_domain, public_document
from machine_health.archive import unit_state
from machine_health.archive.audit import audit_entry, record_audit
from machine_health.archive.labels import backfill_failure, set_label
from machine_health.archive.predictions import find_page, get_prediction, purge_unit_cycles
from machine_health.domains import DOMAINS
from machine_health.domains.base import Domain
from machine_health.errors import Forbidden, InputError, NotFound

logger = logging.getLogger(__name__)

router = api_router(tags=["archive"])

_SAFE = r"^[A-Za-z0-9_.:@-]+$"
#: a unit's domain; may be left out while one domain alone has units (the registry says which)
_DomainQuery = Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")]


def _backfilled(domain: Domain) -> bool:
    return domain.label_mode == "failure_backfill"


def _only_domain(state: Any, name: str | None, what: str, fits: Callable[[Domain], bool]) -> str:
    """`name` when its domain `fits`; when None, the one served domain that does."""
    candidates = [n for n, d in state.scorer.domains.items() if fits(d)]
    if name is None and len(candidates) == 1:
        return candidates[0]
    if name is None:
        raise InputError(f"domain: say which of {', '.join(candidates) or 'none'} ({what})")
    if name not in candidates:
        raise NotFound(f"{name!r} is not a domain {what}")
    return name


@router.get("/predictions", response_model=PredictionPage)
async def list_predictions(
    db: DbDep,
    _: Reader,
    domain: Annotated[str | None, Query(max_length=32, pattern=_SAFE)] = None,
    asset_id: Annotated[str | None, Query(max_length=64, pattern=_SAFE)] = None,
    model_version: Annotated[str | None, Query(max_length=16, pattern=_SAFE)] = None,
    since: ClientDatetime | None = None,
    until: ClientDatetime | None = None,
    cursor: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9]{13}/[A-Za-z0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Archived predictions, newest first, filtered, one page at a time: `cursor` is the
    previous page's `next_cursor` (keyset pagination: every page costs the same, however
    deep)."""
    domains = [domain] if domain is not None else sorted(DOMAINS)
    docs, next_cursor = await find_page(
        db, domains=domains, asset_id=asset_id, model_version=model_version,
        since=since, until=until, after=cursor, limit=limit,
    )  # fmt: skip
    return {
        "items": [public_document(d) for d in docs],
        "limit": limit,
        "next_cursor": next_cursor,
    }


@router.get("/predictions/{prediction_id}")
async def read_prediction(
    prediction_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9]+$")],
    db: DbDep,
    _: Reader,
) -> dict[str, Any]:
    """One archived prediction with its input, output, model and label."""
    return public_document(await get_prediction(db, prediction_id))


@router.post("/feedback", response_model=FeedbackResponse)
async def create_feedback(
    body: FeedbackRequest, db: DbDep, state: StateDep, caller: Labeller
) -> dict[str, Any]:
    """Record the inspected class of an archived prediction (domains labelled by feedback)."""
    doc = await get_prediction(db, body.prediction_id)
    name = doc["domain"]
    domain = state.scorer.domains.get(name)
    if domain is None or domain.label_mode != "feedback":
        takers = [n for n, d in state.scorer.domains.items() if d.label_mode == "feedback"]
        raise InputError(
            f"feedback labels {' and '.join(takers) or 'no'} predictions; a {name} prediction "
            "is labelled by POST /assets/{unit_id}/failure"
        )
    loaded = state.holder.loaded(name)
    labels = getattr(loaded.bundle, "labels", None) if loaded else None
    if labels and body.label not in labels:
        raise InputError(f"label: {body.label!r} is not one of {', '.join(labels)}")
    return await set_label(
        db, body.prediction_id, domain=name, label=body.label, source="feedback",
        labelled_by=caller.username,
    )  # fmt: skip


@router.post("/assets/{unit_id}/failure", response_model=FailureResponse)
async def create_failure(
    unit_id: Annotated[str, Path(max_length=64, pattern=_SAFE)],
    body: FailureRequest,
    db: DbDep,
    state: StateDep,
    settings: SettingsDep,
    caller: Labeller,
    domain: _DomainQuery = None,
) -> dict[str, Any]:
    """Record a unit's failure cycle: back-fills the true RUL of its archived cycles.

    Bounded, so one request cannot block retraining (the validate step refuses labels beyond
    its range): at least the unit's last archived cycle, at most MH_TURBOFAN_MAX_CYCLE and at
    most MH_TURBOFAN_MAX_RUL_LABEL after its first archived cycle (else 422).
    """
    if body.failure_cycle > settings.turbofan_max_cycle:
        raise InputError(
            f"failure_cycle {body.failure_cycle} is beyond the plausible maximum "
            f"{settings.turbofan_max_cycle} (MH_TURBOFAN_MAX_CYCLE)"
        )
    name = _only_domain(state, domain, "labelled by a failure", _backfilled)
    return await backfill_failure(
        db, unit_id, body.failure_cycle, labelled_by=caller.username, source="failure",
        domain=name, max_label=settings.turbofan_max_rul_label,
    )  # fmt: skip


@router.delete("/assets/{unit_id}/cycles", response_model=PurgeResponse)
async def delete_unit_cycles(
    unit_id: Annotated[str, Path(max_length=64, pattern=_SAFE)],
    from_cycle: Annotated[int, Query(ge=1, le=INT64_MAX)],
    db: DbDep,
    state: StateDep,
    caller: CurrentUser,
    domain: _DomainQuery = None,
) -> dict[str, Any]:
    """Admin only: delete a unit's archived cycles >= from_cycle and reset its serving state.

    Repairs a unit a wrong cycle made unusable (every real cycle a 409). The unit's state is
    removed and rebuilt from the archive at its next cycle, on any replica. Audited: logged
    and recorded in the `audit` collection with who did it.
    """
    if caller.role != "admin":
        raise Forbidden(f"role {caller.role!r} may not purge a unit's cycles (admin only)")
    scorer = state.scorer
    domain = _only_domain(state, domain, "scored cycle by cycle", is_sequence_domain)
    async with scorer.histories.lock(unit_id):
        purged = await purge_unit_cycles(db, domain, unit_id, from_cycle)
        reset = await unit_state.delete(db, domain, unit_id)
        scorer.histories.forget(unit_id)
    if not purged["deleted"] and not reset and purged["last_cycle"] is None:
        raise NotFound(f"no archived cycles for {domain} unit {unit_id!r}")
    answer = {"domain": domain, "unit_id": unit_id, "from_cycle": from_cycle, **purged,
              "state_reset": reset}  # fmt: skip
    logger.warning(
        "audit: %s (%s) purged %d archived cycle(s) >= %d of %s unit %s; last cycle now %s",
        caller.username, caller.role, purged["deleted"], from_cycle, domain, unit_id,
        purged["last_cycle"],
    )  # fmt: skip
    entry = audit_entry(
        "purge_unit_cycles", user=caller.username, via="api", domain=domain, unit_id=unit_id,
        from_cycle=from_cycle, deleted=purged["deleted"], state_reset=reset,
    )  # fmt: skip
    await record_audit(db, entry)
    return answer
