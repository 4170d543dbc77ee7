"""The acoustic domain's pipeline and monitoring rules on real clips (no store, no MLflow):
what the archive keeps of a clip, the validate step's rules, live performance."""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa
import pytest

from machine_health.config import Settings
from machine_health.domains import get_domain
from machine_health.domains.acoustic.data import resolve_dataset_dir
from machine_health.domains.acoustic.demo import clip_body, replayed_clips
from tests.support.paths import DATA_DIR

DOMAIN = get_domain("acoustic")


@pytest.fixture(scope="module")
def archived() -> list[dict]:
    """Archived documents of four real replayed clips, labelled as the replay labels them."""
    directory = resolve_dataset_dir(DATA_DIR)
    docs = []
    for clip in replayed_clips(directory)[:4]:
        item = DOMAIN.input_model.model_validate(clip_body(directory, clip))
        docs.append({"input": DOMAIN.archived_input(item), "label": clip.label})
    return docs


def table_of(docs: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([DOMAIN.snapshot_row(d) for d in docs],
                                schema=DOMAIN.snapshot_schema())  # fmt: skip


def test_real_clips_pass_every_rule(archived: list[dict]) -> None:
    table = table_of(archived)
    assert DOMAIN.validation_problems(table, Settings(_env_file=None, env="test")) == []
    facts = DOMAIN.validation_facts(table)
    assert facts["normal_clips"] + facts["anomalous_clips"] == 4


def test_each_broken_record_breaks_its_rule(archived: list[dict]) -> None:
    good = archived[0]

    def broken(**changes: object) -> dict:
        return {"input": {**good["input"], **changes.pop("input", {})}, "label": good["label"],
                **changes}  # fmt: skip

    spectrum = np.frombuffer(base64.b64decode(good["input"]["log_mel_f16_base64"]), "<f2").copy()
    spectrum[5] = np.inf
    loud = spectrum.copy()
    loud[5] = 500.0
    docs = [
        broken(label="ball"),
        broken(input={"log_mel_bands": 16}),
        broken(input={"log_mel_frames": 40}),
        broken(input={"log_mel_f16_base64": "not base64!"}),
        broken(input={"log_mel_f16_base64": base64.b64encode(spectrum.tobytes()).decode()}),
        broken(input={"log_mel_f16_base64": base64.b64encode(loud.tobytes()).decode()}),
        good,
    ]
    problems = DOMAIN.validation_problems(table_of(docs), Settings(_env_file=None, env="test"))
    rows = sorted(int(i) for _, mask in problems for i in np.flatnonzero(mask))
    assert rows == [0, 1, 2, 3, 4, 5], problems  # each broken row once, the good one never


def test_live_performance_from_feedback_labels() -> None:
    def record(label: str, alarm: bool, score: float) -> dict:
        out = {"is_anomaly": alarm, "anomaly_score": score, "threshold": 1.0}
        return {"model_version": "3", "label": label, "output": out}

    records = [record("anomaly", True, 3.0)] * 6 + [record("anomaly", False, 0.9)] * 4
    records += [record("normal", False, 0.5)] * 9 + [record("normal", True, 1.5)]
    records += [{"model_version": "3", "label": None, "output": {"is_anomaly": True}}]
    live = DOMAIN.live_performance(records, Settings(_env_file=None, env="test"))["3"]
    assert live["status"] == "ok" and live["n_labelled"] == 20
    assert (live["recall"], live["false_alarm_rate"]) == (0.6, 0.1)
    assert set(DOMAIN.live_columns) <= set(live)
    assert not DOMAIN.degraded(live, Settings(_env_file=None, env="test"))
    worse = [record("normal", True, 2.0)] * 10 + [record("anomaly", False, 0.1)] * 10
    live = DOMAIN.live_performance(worse, Settings(_env_file=None, env="test"))["3"]
    assert live["false_alarm_rate"] == 1.0 and live["auc"] < 0.5
    assert DOMAIN.degraded(live, Settings(_env_file=None, env="test"))
