"""Where one turbofan model call spends its time, in-process, on real FD001 test histories.

`python -m bench._turbofan_call --tracking-uri URI [--batch 25]`

Loads the @champion turbofan bundle of the registry, builds `--batch` real test_FD001 unit
histories of up to 100 cycles as the API caches them (`HistoryRow`s) and times, best of 5
repeats: the whole `bundle.predict`, reading the histories, the windows, each member, and the
boosted-trees member through scikit-learn's own `predict` against `domains.trees` (treelite).
"""

from __future__ import annotations

import argparse
import json
import secrets
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

from machine_health import registry
from machine_health.config import Settings
from machine_health.domains import trees
from machine_health.domains.turbofan.bundle import HistoryRow, history_values
from machine_health.domains.turbofan.data import load_subset
from machine_health.domains.turbofan.features import rolling_features
from machine_health.domains.turbofan.models import predict_member


def best_ms(call: Callable[[], object], number: int = 40) -> float:
    call()
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._turbofan_call")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--batch", type=int, default=25)
    args = parser.parse_args(argv)
    settings = Settings(
        _env_file=None, env="test", mlflow_tracking_uri=args.tracking_uri,
        jwt_secret=secrets.token_urlsafe(48), service_token=secrets.token_urlsafe(48),
    )  # fmt: skip
    bundle, ref = registry.load(settings, "turbofan")
    test = load_subset(args.data_dir, "FD001").test
    histories = [
        [HistoryRow(row) for row in unit.sort_values("cycle").to_dict("records")][-100:]
        for _, unit in list(test.groupby("unit"))[: args.batch]
    ]
    last = bundle.transform.history_cycles
    values = [history_values(h, last) for h in histories]
    windows, _ = bundle.transform.last_windows(values)
    out: dict[str, float] = {
        "bundle.predict": best_ms(lambda: bundle.predict(histories)),
        "history_values": best_ms(lambda: [history_values(h, last) for h in histories]),
        "last_windows": best_ms(lambda: bundle.transform.last_windows(values)),
    }
    for i, member in enumerate(bundle.members):
        out[f"member {i} ({member.name})"] = best_ms(lambda m=member: predict_member(m, windows))
        if member.kind == "sklearn":
            features = rolling_features(windows, member.params.get("scales", ()))
            out[f"member {i} trees, scikit-learn predict"] = best_ms(
                lambda m=member, f=features: m.estimator.predict(f)
            )
            out[f"member {i} trees, treelite"] = best_ms(
                lambda m=member, f=features: trees.predict(m.estimator, f)
            )
            same = np.allclose(trees.predict(member.estimator, features),
                               member.estimator.predict(features), rtol=0, atol=1e-9)  # fmt: skip
            print(f"member {i}: {member.estimator.n_iter_} trees; treelite == scikit-learn: {same}")
    print(f"turbofan v{ref.version}, {len(histories)} histories of up to 100 cycles")
    for name, ms in out.items():
        print(f"{name:40s} {ms:7.2f} ms")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
