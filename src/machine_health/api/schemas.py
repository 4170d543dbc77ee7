"""Request and response bodies of the API that are not a domain's own input/output models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


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


class FailureRequest(BaseModel):
    failure_cycle: int = Field(ge=1, description="The cycle at which the unit failed.")

    model_config = {"json_schema_extra": {"examples": [{"failure_cycle": 143}]}}


class FailureResponse(BaseModel):
    unit_id: str
    failure_cycle: int
    labelled: int
    modified: int
    labelled_at: datetime


class PredictionPage(BaseModel):
    items: list[dict[str, Any]]
    offset: int
    limit: int
    next_offset: int | None


class ReloadRequest(BaseModel):
    domain: str | None = Field(None, description="One domain; all when omitted.")
    version: str | None = Field(None, pattern=r"^[0-9]+$", description="A registry version.")
    alias: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="A registry alias (default champion)."
    )

    model_config = {"json_schema_extra": {"examples": [{"domain": "vibration"}, {}]}}
