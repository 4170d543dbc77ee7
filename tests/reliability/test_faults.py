"""Faults under bounded real traffic: every request answered once, archived exactly once.

Each test runs its own file-backed embedded store and its own uvicorn, sends `FAST.total` real
predictions (C-MAPSS cycles and CWRU windows, each with an Idempotency-Key, retried on a
transport error or 503), injects ONE fault and counts the archive by prediction_id. The longer
variants run in `make bench` (bench/reliability.py) with the same code.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.reliability.harness import Report
from tests.support.reliability.scenarios import (
    FAST,
    ReliabilityRegistry,
    run_api_kill,
    run_reload_rollback,
    run_store_outage,
)


def _assert_exactly_once(report: Report) -> None:
    figures = report.figures
    print(report.fault, figures)
    assert report.violations == [], (report.violations, figures)
    assert figures["sent"] == FAST.total
    # every logical request acknowledged, and exactly one record per acknowledged request
    assert figures["acknowledged"] == figures["archived"] == FAST.total, figures
    assert figures["duplicates"] == figures["missing"] == figures["mismatched"] == 0


def test_store_killed_under_traffic_loses_nothing(
    tmp_path: Path, reliability_registry: ReliabilityRegistry
) -> None:
    report = run_store_outage(tmp_path, reliability_registry)
    _assert_exactly_once(report)
    assert report.figures["failures"] == {}
    assert report.figures["acknowledged_during_outage"] > 0
    # the spool absorbed the outage: no client had to retry
    assert report.figures["retried"] == 0, report.figures["transient_statuses"]


def test_api_sigkilled_under_traffic_loses_nothing(
    tmp_path: Path, reliability_registry: ReliabilityRegistry
) -> None:
    report = run_api_kill(tmp_path, reliability_registry)
    _assert_exactly_once(report)
    assert report.figures["failures"] == {}
    assert report.figures["spool_bytes_left_by_killed_api"] > 0
    assert report.figures["retried"] > 0  # the kill did cut requests, which were retried


def test_reload_and_rollback_under_traffic(
    tmp_path: Path, reliability_registry: ReliabilityRegistry
) -> None:
    report = run_reload_rollback(tmp_path, reliability_registry)
    _assert_exactly_once(report)
    assert report.figures["failures"] == {}
    assert report.figures["retried"] == 0, report.figures["transient_statuses"]
    assert set(report.figures["versions"]) == {"1", "2"}
