"""One Keras member call at serving, before and after the single-trace call (issue #27).

`python -m bench.model_call [--calls 1000] [--models mlp cnn]`

Builds the served ensemble's MLP (width 256, on the rolling features of 100-cycle windows) and
the CNN of the test fixtures (untrained: the weights do not change the time) and times, per call
in ms (median and p99 of `--calls` calls), the member's prediction of 1, 8, 25, 64 windows and of
a random mix of 1..64: before, Keras's `predict_on_batch` (the old `predict_member`); after,
`predict_member` (`models.keras_call`, traced once). Both are warmed up on two batch sizes first;
"first 2 calls" is the time of the first two calls (1, then 8 windows) of a freshly loaded member,
its tracing included. The rolling features are computed beforehand: the model call only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from machine_health.domains.turbofan.features import rolling_features
from machine_health.domains.turbofan.models import Fitted, build_keras, predict_member

WINDOW, N_FEATURES, SCALES = 100, 15, (10, 30, 60)
SIZES: list[int | str] = [1, 8, 25, 64, "mixed"]


def ms_per_call(call: Callable[[int], object], sizes: list[int]) -> tuple[float, float]:
    """(median, p99) ms of `call(n)` for each `n` of `sizes`."""
    times = []
    for n in sizes:
        started = time.perf_counter()
        call(n)
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times)), float(np.percentile(times, 99))


def fresh(name: str, saved: Path) -> Fitted:
    """The saved model loaded as a bundle loads it (`TurbofanBundle.load_files`)."""
    import keras

    model = keras.saving.load_model(saved, compile=False)
    params = {"scales": list(SCALES)} if name == "mlp" else {}
    return Fitted(name, "keras", model, history={}, params=params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_call")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(64, WINDOW, N_FEATURES))
    features = rolling_features(windows, SCALES)
    mixed = [int(n) for n in rng.integers(1, 65, size=args.calls)]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            x_all = features if name == "mlp" else windows
            model = build_keras(name, x_all.shape[1:], 1e-3, features=features)
            saved = Path(tmp) / f"{name}.keras"
            model.save(saved)
            # before and after, each on its own freshly loaded model
            before, after = fresh(name, saved), fresh(name, saved)

            def old(n: int, m: Fitted = before, x: np.ndarray = x_all) -> object:
                return np.asarray(m.estimator.predict_on_batch(x[:n]), "float64").reshape(-1)

            def new(n: int, m: Fitted = after) -> object:  # rolling features precomputed
                return predict_member(m, windows[:n], {tuple(SCALES): features[:n]})

            for label, call in (("before", old), ("after", new)):
                first = ms_per_call(call, [1])[0] + ms_per_call(call, [8])[0]
                results[f"{name} {label} first 2 calls"] = round(first, 1)
            for size in SIZES:
                sizes = mixed if size == "mixed" else [int(size)] * args.calls
                for label, call in (("before", old), ("after", new)):
                    median, p99 = ms_per_call(call, sizes)
                    results[f"{name} {label} {size}"] = (round(median, 3), round(p99, 3))
            for n in (1, 8, 25, 64):  # same numbers, to float32 rounding
                assert np.allclose(old(n), new(n), rtol=1e-6, atol=1e-7), (name, n)
    print(f"{'model path batch':28s} {'median ms':>10s} {'p99 ms':>10s}")
    for key, value in results.items():
        if isinstance(value, tuple):
            print(f"{key:28s} {value[0]:10.3f} {value[1]:10.3f}")
        else:
            print(f"{key:28s} {value:10.1f} (total)")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
