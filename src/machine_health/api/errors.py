"""The ONE place where errors become HTTP responses.

Every error body is JSON: `{"error": <kind>, "reason": <human sentence>}` (plus `errors` with the
failing fields for a 422 on request validation, and `request_id`). Unexpected exceptions become a
500 whose reason names the request id to look up in the logs, never the exception text.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from machine_health import errors

logger = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str
    message: str
    type: str | None = None


class ErrorBody(BaseModel):
    """Every error answer (extra keys, e.g. the results of a refused reload, may follow)."""

    error: str = Field(description="Kind of error, e.g. `unauthorized`, `validation_error`.")
    reason: str = Field(description="What went wrong, in one sentence.")
    request_id: str | None = Field(None, description="Id of the request in the server log.")
    errors: list[FieldError] | None = Field(None, description="Failing fields (422 only).")


# Documented on every operation, so the OpenAPI schema describes what clients really get (the
# default 422 body of FastAPI is replaced by ours). A 500 is never documented: it is a bug.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed request body",
        401: "Missing, invalid or expired credentials",
        403: "The caller's role may not do this",
        404: "Unknown resource, domain or model version",
        409: "Conflict (existing user, last enabled admin, turbofan cycle out of order, "
        "Idempotency-Key reused for another request, a shadow's promotion refused)",
        413: "Request body over the size limit",
        422: "Invalid input (fields named in `errors`) or a refused model",
        429: "Too many failed logins",
        503: "Store or model unavailable, or the spool is full",
    }.items()
}


class IdempotencyKeyReused(errors.AlreadyExists):
    """An Idempotency-Key already used by this user for another route or another body (409).

    A key names ONE request (draft-ietf-httpapi-idempotency-key-header): its retries get the
    first answer; a different request under the same key is refused, never answered with
    another request's result.
    """


# Most specific first: the first matching class decides the status.
STATUS: list[tuple[type[errors.MachineHealthError], int, str]] = [
    (errors.Throttled, 429, "throttled"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.AuthError, 401, "unauthorized"),
    (IdempotencyKeyReused, 409, "idempotency_key_reused"),
    (errors.SequenceConflict, 409, "sequence_conflict"),
    (errors.AlreadyExists, 409, "already_exists"),
    (errors.LastAdmin, 409, "last_admin"),
    (errors.PromotionRefused, 409, "promotion_refused"),
    (errors.InputError, 422, "invalid_input"),
    (errors.NotFound, 404, "not_found"),
    (errors.SpoolFull, 503, "spool_full"),
    (errors.StoreError, 503, "store_unavailable"),
    (errors.ModelNotFound, 404, "model_not_found"),
    (errors.ModelRejected, 422, "model_rejected"),
    (errors.ModelError, 503, "model_unavailable"),
    (errors.DataError, 500, "data_error"),
    (errors.ConfigurationError, 500, "configuration_error"),
    (errors.PipelineError, 500, "pipeline_error"),
    (errors.MachineHealthError, 500, "error"),
]
_HTTP_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_of(exc: errors.MachineHealthError) -> tuple[int, str]:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "error"


def error_body(request: Request | None, kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": kind, "reason": reason, **extra}
    request_id = getattr(getattr(request, "state", None), "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return body


def _finite(value: Any) -> Any:
    """Validation errors echo the input; NaN/inf are not JSON, so they are named instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value[:8]]
    return value


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


# What a client reads of a 5xx: never the exception's text (a driver's message names hosts,
# replica sets, paths or versions); the log has it under the request id.
_GENERIC_REASONS = {
    "store_unavailable": "the archive is unavailable; retry later",
    "spool_full": "the archive is unavailable and this replica's spool is full; retry later",
    "model_unavailable": "the model of this domain is unavailable; retry later",
}
_INTERNAL_REASON = "internal error; the server log has the details under this request id"


def _public_reason(kind: str, status: int, exc: Exception) -> str:
    if status < 500:
        return str(exc)
    return _GENERIC_REASONS.get(kind, _INTERNAL_REASON)


async def _on_ours(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.MachineHealthError)
    status, kind = status_of(exc)
    if status >= 500:
        logger.error(
            "%s on %s %s (request %s): %s", kind, request.method, request.url.path,
            getattr(request.state, "request_id", None), exc,
        )  # fmt: skip
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 429:
        headers = {"Retry-After": "60"}
    reason = _public_reason(kind, status, exc)
    return JSONResponse(error_body(request, kind, reason), status_code=status, headers=headers)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {
            "field": _field(tuple(e.get("loc", ()))),
            "message": e.get("msg", ""),
            "type": e.get("type"),
        }
        for e in exc.errors()
    ]
    first = fields[0] if fields else {"field": "body", "message": "invalid"}
    reason = f"{first['field']}: {first['message']}"
    if len(fields) > 1:
        reason += f" (and {len(fields) - 1} more)"
    body = error_body(request, "validation_error", reason, errors=_finite(fields))
    return JSONResponse(body, status_code=422)


def allowed_methods(request: Request) -> str:
    """Every method of every route at the request's path (Starlette's 405 names only the first
    route's, e.g. `PATCH` where `PATCH` and `DELETE` are two routes of one path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_KINDS.get(exc.status_code, "http_error")
    reason = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return JSONResponse(
        error_body(request, kind, reason), status_code=exc.status_code, headers=headers or None
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "unexpected error on %s %s (request %s)", request.method, request.url.path,
        getattr(request.state, "request_id", None), exc_info=exc,
    )  # fmt: skip
    reason = "internal error; the server log has the details under this request id"
    return JSONResponse(error_body(request, "internal_error", reason), status_code=500)


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers (`ErrorBody`) to every operation of an OpenAPI document.

    Done on the finished document, so it holds whatever way the routes were added; it also
    replaces FastAPI's default 422 body, which is not what `_on_validation` sends.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["ErrorBody"] = body
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "put", "post", "delete", "patch"}:
                continue
            responses = operation.setdefault("responses", {})
            for status, answer in ERROR_RESPONSES.items():
                responses[str(status)] = {
                    "description": answer["description"],
                    "content": {"application/json": {"schema": ref}},
                }
    return schema


def install(app: FastAPI) -> None:
    """Register the handlers on `app` and document their answers in its OpenAPI schema."""
    app.add_exception_handler(errors.MachineHealthError, _on_ours)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
