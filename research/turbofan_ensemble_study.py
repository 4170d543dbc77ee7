"""Validation-only study of the ensemble's members on FD001 (reads the TRAINING file only).

`python -m research.turbofan_ensemble_study [--data-dir ../shared/data] [--folds 5] [--cnns 5]
[--mlps 3 --mlp-width 256] [--extra lstm,cnn_gru] [--rescore [--merge OTHER.npz ...]]`

The same unit-wise K-fold as `research.turbofan_hgb_study` (same folds for the same seed): each
fold's units are held out, the transform and the members (early stopping on that fold, as the
split run of `train_bundle` does) are fitted on the others, and the held-out units' test-like
cuts (`training.validation_cuts`) are predicted. The out-of-fold predictions of every member are
saved (`--out`), so compositions are compared on the same 100 units:

- `plain`: the mean of the members (repeats of a name share their name's weight equally);
- `cross-fitted`: weights learned by `learn_weights` on the OTHER folds' cuts, applied to the
  held-out fold (the learned weights' honest score: never fitted on the units they score);
- `in-sample`: weights learned on all cuts (optimistic; shown only next to the cross-fitted).

The test file is never opened.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np

from machine_health.config import Settings
from machine_health.domains.turbofan.data import find_file, read_history, resolve_cmapss_dir
from machine_health.domains.turbofan.models import FitConfig, fit_member, predict_member
from machine_health.domains.turbofan.training import cut_scores, learn_weights
from research.turbofan_hgb_study import study_parser, unit_folds


def _members(
    cnns: int, hgb_scales: tuple[int, ...], extra: list[str], window_hgb: bool = True, mlps: int = 0
) -> list[tuple[str, str]]:
    """(label, model name) of every member to train per fold; CNN (MLP) #k trains with seed +
    1000 k."""
    out = [("hgb", "hgb")] if window_hgb or not hgb_scales else []
    if hgb_scales:
        out.append(("hgb_ms", "hgb"))
    out += [(f"cnn#{k + 1}", "cnn") for k in range(cnns)]
    out += [(f"mlp#{k + 1}", "mlp") for k in range(mlps)]
    out += [(name, name) for name in extra]
    return out


def _combine(names: list[str], preds: list[np.ndarray], weights: list[float] | None) -> np.ndarray:
    if weights is None:  # plain mean with repeats sharing their name's weight
        groups = list(dict.fromkeys(names))
        weights = [1 / len(groups) / names.count(n) for n in names]
    return np.average(preds, axis=0, weights=weights)


def main(argv: list[str] | None = None) -> int:
    parser = study_parser()
    parser.add_argument("--cnns", type=int, default=5)
    parser.add_argument("--hgb-scales", default="", help="comma list: also an hgb with them")
    parser.add_argument(
        "--no-window-hgb", action="store_true",
        help="with --hgb-scales: train only the multi-scale hgb (seed s, as served)",
    )  # fmt: skip
    parser.add_argument("--mlps", type=int, default=0, help="MLPs of the rolling features")
    parser.add_argument("--mlp-width", type=int, default=FitConfig.mlp_width)
    parser.add_argument("--extra", default="", help="comma list of more Keras members")
    parser.add_argument("--out", type=Path, default=Path("turbofan_ensemble_study.npz"))
    parser.add_argument(
        "--rescore", action="store_true",
        help="train nothing: score the folds saved in --out (the same member options)",
    )  # fmt: skip
    parser.add_argument(
        "--merge", type=Path, nargs="*", default=[],
        help="with --rescore: also read these saved runs (members they share must agree)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings(_env_file=None, data_dir=args.data_dir)
    scales = tuple(int(k) for k in args.hgb_scales.split(",") if k)
    extra = [e for e in args.extra.split(",") if e]
    members = _members(args.cnns, scales, extra, window_hgb=not args.no_window_hgb, mlps=args.mlps)
    cap = float(settings.rul_cap)
    if args.rescore:
        return rescore([args.out, *args.merge], members, cap)
    train = read_history(find_file(resolve_cmapss_dir(args.data_dir), f"train_{args.subset}"))
    base = FitConfig(mlp_width=args.mlp_width)
    preds: dict[str, list[np.ndarray]] = {label: [] for label, _ in members}
    seconds = {label: 0.0 for label, _ in members}
    truth: list[np.ndarray] = []
    for i, fold in enumerate(unit_folds(settings, train, args.folds, args.seed)):
        truth.append(fold.rul)
        repeat: dict[str, int] = {}
        for label, name in members:
            k = repeat.get(name, 0)
            repeat[name] = k + 1
            # "hgb" is the window summary only, "hgb_ms" (and the MLPs) add the scales
            config = replace(base, hgb_scales=scales if label != "hgb" else ())
            started = time.perf_counter()
            member = fit_member(
                name, fold.train_xy, fold.val_xy, seed=args.seed + 1000 * k, config=config
            )
            seconds[label] += time.perf_counter() - started
            preds[label].append(predict_member(member, fold.cuts) * cap)
            score = cut_scores(fold.rul, preds[label][-1])["val_rmse_last"]
            print(f"fold {i} {label:8s} val_rmse_last {score:.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
        # saved after every fold: a stopped run keeps what it measured
        saved = {f"{lab}_{j}": p for lab, ps in preds.items() for j, p in enumerate(ps)}
        np.savez(args.out, **{f"truth_{j}": t for j, t in enumerate(truth)}, **saved)
    report(members, preds, truth, seconds, cap)
    return 0


def rescore(paths: list[Path], members: list[tuple[str, str]], cap: float) -> int:
    """Report the folds saved by (possibly stopped) runs: those every member finished.

    Runs that trained different extra members on the same folds combine: what two runs share
    (the truth, hgb, the MLPs: deterministic for one seed) must be equal, else they are not the
    same folds or the same code.
    """
    saved: dict[str, np.ndarray] = {}
    for path in paths:
        for key, value in np.load(path).items():
            if key in saved and not np.array_equal(saved[key], value):
                raise SystemExit(f"{path}: {key} differs from an earlier file's")
            saved[key] = value
    done = 0
    while all(f"{label}_{done}" in saved for label, _ in members):
        done += 1
    print(f"{done} folds saved for every member", flush=True)
    preds = {label: [saved[f"{label}_{j}"] for j in range(done)] for label, _ in members}
    truth = [saved[f"truth_{j}"] for j in range(done)]
    report(members, preds, truth, {label: 0.0 for label, _ in members}, cap)
    return 0


def report(
    members: list[tuple[str, str]],
    preds: dict[str, list[np.ndarray]],
    truth: list[np.ndarray],
    seconds: dict[str, float],
    cap: float,
) -> dict[str, dict[str, float]]:
    """Print and return the out-of-fold scores of every member and composition."""
    n = len(truth)
    y = np.concatenate(truth)
    out: dict[str, dict[str, float]] = {}

    def score(name: str, per_fold: list[np.ndarray]) -> None:
        p = np.concatenate(per_fold)
        each = [cut_scores(t, q) for t, q in zip(truth, per_fold, strict=True)]
        folds = [f["val_rmse_last"] for f in each]
        phm = [f["val_phm_last"] for f in each]
        out[name] = {**cut_scores(y, p), "per_fold_rmse": folds, "per_fold_phm": phm}  # type: ignore[dict-item]
        print(f"{name:40s} val_rmse_last {out[name]['val_rmse_last']:.3f} val_phm_last "
              f"{out[name]['val_phm_last']:.0f} folds {' '.join(f'{r:.2f}' for r in folds)} "
              f"phm {' '.join(f'{r:.0f}' for r in phm)}", flush=True)  # fmt: skip

    for label, _ in members:
        score(label, preds[label])
        print(f"   ({seconds[label] / n:.0f} s per fit)")
    cnns = [label for label, name in members if name == "cnn"]
    mlps = [label for label, name in members if name == "mlp"]
    others = [label for label, name in members if name not in ("cnn", "hgb", "mlp")]
    hgbs = [label for label, name in members if name == "hgb"]
    compositions = []
    for hgb in hgbs:
        for c in range(1, len(cnns) + 1):
            compositions.append([*cnns[:c], hgb])
        if mlps:
            compositions.append([hgb, *mlps])
            if cnns:
                compositions.append([*cnns, hgb, *mlps])
        for r in range(1, len(others) + 1):
            for extra in combinations(others, r):
                compositions.append([*cnns[:3], *extra, hgb])
                if len(cnns) > 3:
                    compositions.append([*cnns, *extra, hgb])
                if mlps:
                    compositions.append([hgb, *mlps, *extra])
    for labels in compositions:
        names = [lab.split("#")[0] for lab in labels]
        plain = [_combine(names, [preds[lab][j] / cap for lab in labels], None) * cap
                 for j in range(n)]  # fmt: skip
        crossed = []
        for j in range(n):
            rest = [k for k in range(n) if k != j]
            w = learn_weights(
                names, [np.concatenate([preds[lab][k] / cap for k in rest]) for lab in labels],
                np.concatenate([truth[k] for k in rest]), cap,
            )  # fmt: skip
            crossed.append(_combine(names, [preds[lab][j] / cap for lab in labels], w) * cap)
        w_all = learn_weights(names, [np.concatenate(preds[lab]) / cap for lab in labels], y, cap)
        inside = [_combine(names, [preds[lab][j] / cap for lab in labels], w_all) * cap
                  for j in range(n)]  # fmt: skip
        key = " + ".join(labels)
        score(f"{key} plain", plain)
        score(f"{key} cross-fitted", crossed)
        score(f"{key} in-sample", inside)
        per_name: dict[str, float] = {}
        for name, w in zip(names, w_all, strict=True):
            per_name[name] = round(per_name.get(name, 0.0) + w, 3)
        print(f"   in-sample weights per member name: {json.dumps(per_name)}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
