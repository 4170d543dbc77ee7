"""Airflow DAG: scheduled retraining of the vibration model (retrain_factory.py)."""

from __future__ import annotations

from retrain_factory import build_retrain_dag, schedule

dag = build_retrain_dag("retrain_vibration", domain="vibration", schedule_value=schedule())
