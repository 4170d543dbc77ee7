"""The vibration gate's bootstrap draws blocks of a recording, not whole recordings.

The CWRU data has one recording per class: a bootstrap of whole recordings within their class
draws the same four recordings every time, and the gate's "95 % interval" had zero width (the
verdict was the point difference). Blocks of `BLOCK_SAMPLES` give an interval that measures the
sampling noise within the recordings. Real data, the session's trained model.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.base import ItemScores
from machine_health.domains.vibration.reference import BLOCK_SAMPLES
from machine_health.pipeline.evaluate import judge_slice
from tests.support.models import TrainedModels, load_trained
from tests.support.paths import DATA_DIR

DOMAIN = "vibration"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(_env_file=None, data_dir=DATA_DIR)


def test_reference_windows_are_grouped_in_blocks_of_one_recording(
    settings: Settings, trained_models: TrainedModels
) -> None:
    domain = get_domain(DOMAIN)
    bundle = load_trained(settings, trained_models, DOMAIN)
    reference = domain.reference_set(settings)
    windows = reference.data
    scores = domain.item_scores(bundle, reference)
    groups = np.asarray(scores.groups)
    recordings = np.unique(windows.sources)
    assert len(np.unique(groups)) >= 3 * len(recordings)  # several blocks per recording
    assert reference.facts["blocks"] == len(np.unique(groups))
    for group in np.unique(groups):
        rows = groups == group
        assert len(np.unique(windows.sources[rows])) == 1  # a block never spans two recordings
        starts = windows.starts[rows]
        assert starts.max() - starts.min() < BLOCK_SAMPLES

    # A challenger that disagrees with the champion on a tenth of the windows (its class
    # predictions moved to another class): blocks give an interval, whole recordings did not.
    rng = np.random.default_rng(0)
    moved = rng.random(len(groups)) < 0.1
    pred = scores.columns["pred"].copy()
    classes = np.unique(scores.columns["true"])
    pred[moved] = [classes[(list(classes).index(p) + 1) % len(classes)] for p in pred[moved]]
    challenger = replace(scores, columns={**scores.columns, "pred": pred})
    row = next(
        r for r in judge_slice("reference", challenger, scores, settings.gate_tolerance)
        if r["metric"] == "macro_f1"
    )  # fmt: skip
    low, high = row["interval"]
    assert low < row["difference"] < high and high - low > 0.01, row
    assert row["difference"] < 0 and row["n_groups"] == len(np.unique(groups))

    # One fault size's recordings (one per class, as a single-size champion is judged): drawn as
    # whole recordings, every resample is the same four and the interval has zero width.
    one_size = np.array(["014" not in s for s in windows.sources])

    def by_recording(item_scores: ItemScores) -> ItemScores:
        return replace(
            item_scores,
            groups=windows.sources[one_size].astype(str),
            columns={k: v[one_size] for k, v in item_scores.columns.items()},
            strata=item_scores.strata[one_size],
        )

    assert len(np.unique(windows.sources[one_size])) == 4
    old = next(
        r for r in judge_slice("reference", by_recording(challenger), by_recording(scores),
                               settings.gate_tolerance)
        if r["metric"] == "macro_f1"
    )  # fmt: skip
    assert old["difference"] < 0 and old["interval"][1] - old["interval"][0] < 1e-9
