"""Retrain a domain on demand from the Airflow UI: trigger with the `domain` param (forced)."""

from __future__ import annotations

from retrain_factory import build_retrain_dag

dag = build_retrain_dag("retrain_on_demand", domain=None, schedule_value=None, force_default=True)
