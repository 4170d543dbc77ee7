"""Choose the acoustic detector on VALIDATION clips only (the test clips are never read).

    .venv/bin/python -m research.acoustic_selection

Grid: clip statistics (std / std+delta / all four) x band groups (8 / 16 / 32) x detector
(Ledoit-Wolf Mahalanobis / 3-nearest-neighbour distance), each fitted on the normal `train`
clips and ranked by the challenge's official score (harmonic mean of AUC source, AUC target
and pooled pAUC) on the `validation` clips (10 normal + 20 anomalous per domain). Then, for the
chosen detector, the false-alarm rate on validation normals cut to shorter lengths (what
bounds the request's minimum clip length).
"""

from __future__ import annotations

import itertools
import json
import logging
import sys

import numpy as np

from machine_health.config import get_settings
from machine_health.domains.acoustic import (
    FeatureConfig,
    load_clips,
    log_mel,
    prepare,
    train_bundle,
)

logger = logging.getLogger("research.acoustic_selection")
STAT_SETS = (("std",), ("std", "delta"), ("mean", "std", "p95", "delta"))
BANDS = (8, 16, 32)
KINDS = ("mahalanobis", "knn")


def main(argv: list[str]) -> dict:
    settings = get_settings()
    clips = load_clips(settings.data_dir, parts=("train", "validation"))
    prepared = prepare(clips)
    rows = []
    for stats, bands, kind in itertools.product(STAT_SETS, BANDS, KINDS):
        config = FeatureConfig(stat_bands=bands, stats=stats)
        _, result = train_bundle(prepared, seed=0, config=config, kind=kind)
        rows.append({"stats": "+".join(stats), "bands": bands, "kind": kind, **result.validation})
    rows.sort(key=lambda r: -r["official_score"])
    print("| stats | bands | detector | AUC source | AUC target | pAUC | official score |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['stats']} | {r['bands']} | {r['kind']} | {r['auc_source']:.3f} | "
            f"{r['auc_target']:.3f} | {r['pauc']:.3f} | {r['official_score']:.3f} |"
        )
    best = rows[0]
    config = FeatureConfig(stat_bands=best["bands"], stats=tuple(best["stats"].split("+")))
    bundle, _ = train_bundle(prepared, seed=0, config=config, kind=best["kind"])
    normals = prepared.part("validation", "normal")
    lengths = {}
    for seconds in (1.0, 2.0, 5.0, 10.0):
        # spectrograms of the cut clips directly: lengths below the request bound are studied too
        cut = clips.waves[normals][:, : int(seconds * clips.sample_rate)]
        scores = bundle.score_spectrograms(list(log_mel(cut, bundle.config)))
        lengths[seconds] = float(np.mean(scores > bundle.threshold))
    print(f"chosen: {json.dumps(best)}")
    print(f"false-alarm rate of validation normals cut to N seconds: {lengths}")
    return {"ranking": rows, "chosen": best, "fpr_by_seconds": lengths}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
