"""POST /predict/{domain}, /predict/{domain}/batch and /predict-test/{domain}.

The routes are generated per domain so that each body has its domain's schema and a real example
in the OpenAPI document. No `from __future__ import annotations` here: FastAPI must see the
generated body types as objects.
"""

import asyncio
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, Field, create_model

from machine_health.api.deps import IdempotencyKey, Predictor, ScorerDep
from machine_health.api.json_body import api_router
from machine_health.api.schemas import BatchResponse, PredictionResponse
from machine_health.api.scoring import ROUTE_BATCH, asset_of, batch_item_key
from machine_health.domains.base import Domain
from machine_health.errors import InputError, NotFound

logger = logging.getLogger(__name__)

#: `?explain=true`: the answer carries the model's explanation (it costs model calls)
Explain = Annotated[
    bool,
    Query(description="Also answer why (the model's explanation; costs more than the score)."),
]


def first_non_finite(value: Any, path: str) -> str | None:
    """The path of the first NaN/infinity in `value` (JSON parsers accept NaN and Infinity)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, BaseModel):
        value = dict(value)  # shallow: no copy of a 2048-sample list
    if isinstance(value, dict):
        for key, item in value.items():
            found = first_non_finite(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list | tuple) and value:
        if isinstance(value[0], float | int):  # a vector: one numpy pass instead of a loop
            try:
                numbers = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                numbers = None
            if numbers is not None and numbers.ndim == 1:
                bad = np.flatnonzero(~np.isfinite(numbers))
                return f"{path}[{int(bad[0])}]" if bad.size else None
        for index, item in enumerate(value):
            found = first_non_finite(item, f"{path}[{index}]")
            if found:
                return found
    return None


def reject_non_finite(item: BaseModel, prefix: str = "") -> None:
    where = first_non_finite(item, prefix)
    if where:
        raise InputError(f"{where}: NaN or infinity is not a valid value")


def _examples(domain: Domain, data_dir: Path) -> dict[str, Any]:
    try:
        value = domain.example_input(data_dir)
    except Exception as exc:  # the API must start even without the data set beside it
        logger.warning("no OpenAPI example for %s: %s", domain.name, exc)
        return {}
    return {"real": {"summary": f"a real {domain.name} input from the data set", "value": value}}


def _add_domain_routes(router: APIRouter, domain: Domain, data_dir: Path, batch_limit: int) -> None:
    name = domain.name
    examples = _examples(domain, data_dir)
    item_body = Annotated[domain.input_model, Body(openapi_examples=examples)]
    batch_model = create_model(
        f"{domain.input_model.__name__}Batch",
        items=(list[domain.input_model], Field(min_length=1, max_length=batch_limit)),
    )
    batch_examples = {k: {**v, "value": {"items": [v["value"]]}} for k, v in examples.items()}
    batch_body = Annotated[batch_model, Body(openapi_examples=batch_examples)]

    async def predict_item(
        item: item_body,
        request: Request,
        user: Predictor,
        scorer: ScorerDep,
        key: IdempotencyKey = None,
        explain: Explain = False,
    ) -> dict[str, Any]:
        reject_non_finite(item)
        return await scorer.predict(
            name, item, user=user.username, request_id=request.state.request_id,
            idempotency_key=key, explain=explain,
        )  # fmt: skip

    async def predict_test_item(
        item: item_body,
        request: Request,
        user: Predictor,
        scorer: ScorerDep,
        explain: Explain = False,
    ) -> dict[str, Any]:
        reject_non_finite(item)
        return await scorer.predict(
            name, item, user=user.username, request_id=request.state.request_id, archive=False,
            explain=explain,
        )  # fmt: skip

    async def predict_batch(
        body: batch_body,
        request: Request,
        user: Predictor,
        scorer: ScorerDep,
        key: IdempotencyKey = None,
        explain: Explain = False,
    ) -> dict[str, Any]:
        items = body.items  # type: ignore[attr-defined]
        for index, item in enumerate(items):
            reject_non_finite(item, f"items[{index}]")
        _check_batch_order(items)
        answers: list[dict[str, Any] | None] = [None] * len(items)
        # Items of one asset in order (a unit's cycles), different assets concurrently.
        groups: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            groups[asset_of(item)].append(index)

        async def run(indices: list[int]) -> None:
            scored = await scorer.predict_run(
                name, [items[i] for i in indices], user=user.username,
                request_id=request.state.request_id,
                idempotency_keys=[batch_item_key(key, i) if key else None for i in indices],
                route=ROUTE_BATCH, explain=explain,
            )  # fmt: skip
            for index, answer in zip(indices, scored, strict=True):
                answers[index] = answer

        await asyncio.gather(*(run(indices) for indices in groups.values()))
        return {"items": answers}

    predict_item.__doc__ = f"Score one {name} input and archive it (durable before the answer)."
    predict_test_item.__doc__ = f"Score one {name} input without archiving it."
    predict_batch.__doc__ = f"Score up to {batch_limit} {name} inputs in one call, each archived."
    common = {"response_model_exclude_none": False, "tags": [name]}
    router.add_api_route(
        f"/predict/{name}", predict_item, methods=["POST"], response_model=PredictionResponse,
        name=f"predict_{name}", **common,
    )  # fmt: skip
    router.add_api_route(
        f"/predict/{name}/batch", predict_batch, methods=["POST"], response_model=BatchResponse,
        name=f"predict_{name}_batch", **common,
    )  # fmt: skip
    router.add_api_route(
        f"/predict-test/{name}", predict_test_item, methods=["POST"],
        response_model=PredictionResponse, name=f"predict_test_{name}", **common,
    )  # fmt: skip


def _check_batch_order(items: list[Any]) -> None:
    """Cycles of one unit inside a batch must increase, checked before anything is scored."""
    last: dict[str, int] = {}
    for index, item in enumerate(items):
        cycle = getattr(item, "cycle", None)
        if cycle is None:
            continue
        asset = asset_of(item)
        if asset in last and cycle <= last[asset]:
            raise InputError(f"items[{index}].cycle: cycles of unit {asset!r} must increase")
        last[asset] = cycle


def build_router(domains: dict[str, Domain], data_dir: Path, batch_limit: int) -> APIRouter:
    """The prediction routes of every domain, plus a 404 with a reason for unknown ones."""
    router = api_router()
    for domain in domains.values():
        _add_domain_routes(router, domain, data_dir, batch_limit)
    known = ", ".join(sorted(domains))

    async def predict_unknown(domain: str) -> None:
        """Unknown domain: 404 with the list of known ones."""
        raise NotFound(f"unknown domain {domain!r}; known domains: {known}")

    for path in ("/predict/{domain}", "/predict/{domain}/batch", "/predict-test/{domain}"):
        router.add_api_route(
            path, predict_unknown, methods=["POST"], include_in_schema=False,
            name=f"unknown_{path.strip('/').replace('/', '_')}",
        )  # fmt: skip
    return router
