"""Request and response bodies of the API that are not a domain's own input/output models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema

from machine_health.domains import DOMAINS
from machine_health.domains.turbofan import JsonInteger, max_cycle

INT64_MAX = 2**63 - 1  # the largest integer BSON (and so the archive) can hold
#: Every date a client sends lies in [1970, 2100]: the archive holds nothing outside it, and a
#: date at the edge of Python's range (9999-12-31T23:59:59.5Z) overflows when a window is
#: rounded to whole seconds.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


#: What the OpenAPI schema says of a client's date (`format` and a year 1970..2099), so that a
#: generated valid date is accepted and an invalid one refused.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_YEAR_PATTERN = r"^(19[7-9][0-9]|20[0-9][0-9])-"


def _iso_only(value: Any) -> Any:
    """A date is an ISO 8601 string: not a Unix time (`0.5`, which pydantic would read as one)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("dates are ISO 8601 date-times, e.g. 2026-01-31T12:00:00Z")
    return value


def _bounded_date(moment: datetime) -> datetime:
    """Its calendar year (as written, in its own offset) within 1970..2099: at most a day
    (the offset) outside [1970, 2100) UTC, far from the overflows at the ends of the range."""
    if not EARLIEST.year <= moment.year < LATEST.year:
        raise ValueError("dates must lie between 1970-01-01 and 2100-01-01 (UTC)")
    return moment


#: A date sent by a client: ISO 8601 (a naive one is UTC), in the years 1970..2099.
ClientDatetime = Annotated[
    datetime,
    BeforeValidator(_iso_only),
    AfterValidator(_bounded_date),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": _YEAR_PATTERN}),
]


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str | None = None


class PredictionResponse(BaseModel):
    """One scored item: the prediction, the model that made it and the archive status."""

    prediction_id: str
    domain: str
    asset_id: str
    cycle: int | None = None
    prediction: dict[str, Any]
    model: ModelInfo
    archived: Literal["archived", "spooled", "not_archived"] = Field(
        description="archived: acknowledged by the store; spooled: fsync'd locally while the "
        "store is down, replayed when it is back; not_archived: /predict-test."
    )
    created_at: datetime
    latency_ms: float
    request_id: str
    idempotent_replay: bool = Field(False, description="True when a retry got the first answer.")
    explanation: dict[str, Any] | None = Field(
        None,
        description="With `?explain=true`: why the model answered so (`method`, `summary`, "
        "ranked `evidence`, and the domain's own keys); null otherwise.",
    )


class BatchResponse(BaseModel):
    items: list[PredictionResponse]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_at: datetime
    role: str


class RegisterRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=8, max_length=256)
    role: Literal["admin", "operator", "viewer"] = "viewer"

    model_config = {
        "json_schema_extra": {
            "examples": [{"username": "ana", "password": "a-long-passphrase", "role": "viewer"}]
        }
    }


class UserOut(BaseModel):
    username: str
    role: str
    created_at: datetime


class FeedbackRequest(BaseModel):
    prediction_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")
    label: str = Field(min_length=1, max_length=64, description="The inspected fault class.")

    # The id comes from a /predict answer: post this with the one you got back.
    model_config = {
        "json_schema_extra": {
            "examples": [{"prediction_id": "9b1c6f0e2d4a4f3b8e7d6c5b4a392817", "label": "ball"}]
        }
    }


class FeedbackResponse(BaseModel):
    prediction_id: str
    label: str | float
    labelled_at: datetime


def _max_cycle_schema(schema: dict[str, Any]) -> None:
    """The OpenAPI schema says the bound the route applies (MH_TURBOFAN_MAX_CYCLE)."""
    schema["maximum"] = max_cycle()


class FailureRequest(BaseModel):
    failure_cycle: JsonInteger = Field(
        ge=1,
        le=INT64_MAX,
        json_schema_extra=_max_cycle_schema,
        description="The cycle at which the unit failed: at least the unit's last archived "
        "cycle, at most MH_TURBOFAN_MAX_CYCLE, and at most MH_TURBOFAN_MAX_RUL_LABEL after its "
        "first archived cycle.",
    )

    model_config = {"json_schema_extra": {"examples": [{"failure_cycle": 143}]}}


class FailureResponse(BaseModel):
    unit_id: str
    failure_cycle: int
    labelled: int
    modified: int
    labelled_at: datetime


class PurgeResponse(BaseModel):
    domain: str
    unit_id: str
    from_cycle: int
    deleted: int = Field(description="Archived predictions removed (cycles >= from_cycle).")
    last_cycle: int | None = Field(description="The unit's last archived cycle now.")
    state_reset: bool = Field(
        description="The unit's serving state was removed (rebuilt from "
        "the archive at its next cycle)."
    )


class PredictionPage(BaseModel):
    items: list[dict[str, Any]]
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null: this was the last."
    )


class ReloadRequest(BaseModel):
    domain: str | None = Field(None, description="One domain; all when omitted.")
    version: str | None = Field(None, pattern=r"^[0-9]+$", description="A registry version.")
    alias: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="A registry alias (default: the slot's)."
    )
    slot: Literal["champion", "shadow"] = Field(
        "champion",
        description="Load as the answering model, or as the shadow scored beside it (@shadow; "
        "none: the shadow is dropped).",
    )

    model_config = {"json_schema_extra": {"examples": [{"domain": next(iter(DOMAINS))}, {}]}}
