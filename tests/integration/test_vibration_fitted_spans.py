"""A retrained vibration model records the recording spans it fitted through the archive, and
`evaluate vibration --portion test` leaves those windows out (real CWRU data, the session's
trained model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from machine_health.config import Settings
from machine_health.domains.vibration import workflow
from machine_health.domains.vibration.retrain import _concat, fitted_spans
from tests.support.models import TrainedModels, load_trained
from tests.support.paths import DATA_DIR

IR007 = "48k_Drive_End_IR007_0_109.mat"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(_env_file=None, data_dir=DATA_DIR)


def test_test_windows_fitted_through_the_archive_are_excluded_from_evaluate(
    settings: Settings, trained_models: TrainedModels, tmp_path: Path
) -> None:
    test = workflow.load_portion(settings.data_dir, "test")
    length = test.windows.shape[1]
    rows = np.flatnonzero(test.sources == IR007)
    # Six windows a client sent back (three that overlap or touch, three apart), archived and
    # labelled: they reach the training set as "archive:<asset>" windows, rounded as a client
    # sends them.
    picked = [rows[0], rows[0] + length // 512, rows[0] + 2 * length // 512, rows[40], rows[50],
              rows[60]]  # fmt: skip
    sent = test.subset(np.isin(np.arange(len(test)), picked))
    archived = replace(
        sent,
        windows=np.round(sent.windows, 6).astype(np.float32).astype(np.float64),
        sources=np.full(len(sent), "archive:motor-7"),
        starts=np.arange(len(sent)) * length,
    )
    base = workflow.load_portion(settings.data_dir, "train")
    spans = fitted_spans(settings, _concat(base, archived))
    starts = sorted(int(s) for s in sent.starts)
    assert set(spans) == {IR007}
    assert spans[IR007][0] == [starts[0], starts[2] + length]  # overlapping windows merged
    assert [s for s, _ in spans[IR007][1:]] == starts[3:]
    assert fitted_spans(settings, base) == {}  # nothing archived: nothing recorded

    bundle = load_trained(settings, trained_models, "vibration")
    bundle.info["fitted_spans"] = spans
    path = bundle.save(tmp_path / "bundle")
    result = workflow.evaluate_model(settings, str(path))
    overlapping = np.zeros(len(test), dtype=bool)
    for start, end in spans[IR007]:
        inside = (test.starts < end) & (test.starts + length > start)
        overlapping |= (test.sources == IR007) & inside
    assert result["excluded_fitted_windows"] == overlapping.sum() > len(sent)
    assert result["windows"] == len(test) - overlapping.sum()
