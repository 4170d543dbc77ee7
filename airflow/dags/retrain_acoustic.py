"""Airflow DAG: scheduled retraining of the acoustic model (retrain_factory.py)."""

from __future__ import annotations

from retrain_factory import build_retrain_dag, schedule

dag = build_retrain_dag("retrain_acoustic", domain="acoustic", schedule_value=schedule())
