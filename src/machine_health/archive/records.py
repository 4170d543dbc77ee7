"""The shape of an archived prediction: one document per prediction, schema-versioned.

Everything a query filters on is a top-level field (the embedded store has no dotted
projections), foreign keys are strings, and a vibration window is stored compactly as
little-endian float32 bytes with its sample rate and rpm.

    prediction_id   str, unique (uuid4 hex)       the id the API answered with
    idempotency_key str | None                    from the Idempotency-Key header (per user)
    domain          "vibration" | "turbofan"
    asset_id        str                           vibration asset / turbofan unit
    cycle           int | None                    turbofan cycle (ordering of a unit's history)
    input           dict                          domain input (see encode_input)
    output          dict                          what the API answered
    model_name, model_version, model_alias        the registry version that predicted
    user, request_id, latency_ms, created_at (UTC), schema_version
    label           str | float | None            ground truth: fault class / true RUL
    labelled_at     datetime | None               when the label arrived (extract keys on it)
    label_source    "feedback" | "failure" | "import" | None   how the label arrived
    labelled_by     str | None                    who gave it (the API user, or who ran an import)
    shadow          dict | None                   the shadow version's output for the same input
                                                  (api/shadow.py): model_name, model_version,
                                                  status ok/error/late/skipped, output or reason
    explanation     dict | None                   why the output (ModelBundle.explain): method,
                                                  summary, evidence; written with the record
                                                  when asked, else by the background explainer
    domain_time_key, asset_time_key, cycle_key, label_key   str   sort keys (archive/keys.py)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from machine_health.archive.keys import with_keys

# How `input.samples` is stored; imported from here by the archive's callers.
from machine_health.samples import decode_samples as decode_samples
from machine_health.samples import encode_samples as encode_samples

SCHEMA_VERSION = 1


class PredictionRecord(BaseModel):
    """One archived prediction (see the module docstring for each field)."""

    prediction_id: str
    idempotency_key: str | None = None
    domain: str
    asset_id: str
    cycle: int | None = None
    input: dict[str, Any]
    output: dict[str, Any]
    model_name: str
    model_version: str
    model_alias: str | None = None
    user: str
    request_id: str
    latency_ms: float
    created_at: datetime
    schema_version: int = Field(default=SCHEMA_VERSION)
    label: str | float | None = None
    labelled_at: datetime | None = None
    label_source: str | None = None
    labelled_by: str | None = None
    shadow: dict[str, Any] | None = None
    explanation: dict[str, Any] | None = None

    def to_document(self) -> dict[str, Any]:
        """The stored document: the fields, and the sort keys every read ranges on."""
        # `_id` is the prediction id: the embedded store updates by `_id` in ~1 ms and scans the
        # collection for an update on any other field (archive/labels.py).
        return with_keys(self.model_dump())
