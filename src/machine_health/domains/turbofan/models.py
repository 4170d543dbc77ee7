"""Model builders: models of rolling features (boosted trees, an MLP) and Keras sequence models.

Every builder trains on windows `(n, window, features)` with targets scaled to [0, 1] (RUL / cap)
and stops on a validation split made BY UNIT (`data.split_units`); `refit_member` then retrains
on all training units for the epochs (trees) that split chose. Optional per-window weights
(`sample_weight`, `val_weight`: the fleet weights of `training.fleet_weights`) weight both the
fitted loss and the validation loss that chooses the epochs (trees); None = unweighted, exactly
the unweighted code path. The tabular models (`hgb`,
`mlp`) summarise each window by `features.rolling_features` themselves, so every member takes
the same windows. Nothing here sees test data.
Keras is imported inside the functions so that importing the domain (the API's schemas) does not
load TensorFlow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from machine_health.domains import trees
from machine_health.domains.turbofan.features import rolling_features
from machine_health.errors import ModelError

logger = logging.getLogger(__name__)

KERAS_MODELS = ("cnn", "lstm", "cnn_gru", "mlp")
SKLEARN_MODELS = ("hgb",)
#: models of the windows' rolling features (`features.rolling_features`), not of the windows
TABULAR_MODELS = ("hgb", "mlp")
#: name -> members averaged by the bundle (a plain model is its own single member).
#: A repeated member is trained with another seed (seed + 1000 * repeat). `ensemble` (the
#: served default) was chosen over `cnn_ensemble` (the default before), over adding the CNNs
#: and over an LSTM or a CNN-GRU member by a 5-fold-by-unit validation study: figures in
#: docs/BENCHMARKS.md, "Validation study: an MLP of the rolling features, and the ensemble's
#: members".
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "ensemble": ("hgb", "mlp", "mlp", "mlp"),
    "cnn_ensemble": ("cnn", "cnn", "cnn", "hgb"),
}
MODEL_NAMES = (*SKLEARN_MODELS, *KERAS_MODELS, *ENSEMBLES)
DEFAULT_MODEL = "ensemble"


@dataclass
class FitConfig:
    """Training knobs of the turbofan models (the Keras ones and hgb)."""

    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 1e-3
    patience: int = 10
    hgb_max_iter: int = 400
    use_cycle: bool = True  # the unit's age: tells early from late in a flat window
    smoothing: float = 0.15  # causal exponential smoothing of the sensors (noise)
    loss: str = "huber"  # or "mse"; Huber's delta is in RUL / cap units
    huber_delta: float = 0.1
    refit_all: bool = True  # then refit on ALL training units for the early-stopped epochs
    max_levels: int = 2  # also drop sensors with <= this many distinct values in every regime
    #: training-time budget: above this many training windows, each unit keeps every k-th one
    #: (`features.thin_rows`); None = every cycle's window.
    max_windows: int | None = None
    #: the tabular models' extra feature scales (hgb's, and the mlp's since it joined): mean and
    #: slope of the last k cycles besides the whole window (`features.rolling_features`); () =
    #: the whole-window summary only; scales >= the window are skipped. (10, 30, 60): see
    #: docs/BENCHMARKS.md, "Validation study: multi-scale features for `hgb`".
    hgb_scales: tuple[int, ...] = (10, 30, 60)
    #: units of the MLP's first hidden layer (the second has half); widths 32 to 512 compared in
    #: docs/BENCHMARKS.md, "Validation study: an MLP of the rolling features, and the ensemble's
    #: members"
    mlp_width: int = 256
    #: hgb's tree settings: smaller, coarser trees, each split choosing from half the features;
    #: see docs/BENCHMARKS.md, "Validation study: the tree settings of `hgb`".
    hgb_learning_rate: float = 0.08
    hgb_max_leaf_nodes: int = 15
    hgb_min_samples_leaf: int = 200
    hgb_l2_regularization: float = 1.0
    hgb_max_features: float = 0.5  # share of the features each split may choose from
    #: ensembles: learn the members' weights on the test-like validation score (per member
    #: name, repeats share their name's weight); False = the plain mean.
    learn_weights: bool = True


@dataclass
class Fitted:
    """One trained member: its kind ('keras'/'sklearn'), estimator and learning curve."""

    name: str
    kind: str
    estimator: Any
    history: dict[str, list[float]]
    #: what scoring needs besides the estimator (hgb: its feature `scales`), saved in the bundle
    params: dict[str, Any] = field(default_factory=dict)
    #: a Keras member's model as one traced function of any batch size (`keras_call`), built
    #: at its first prediction
    call: Any = field(default=None, init=False, repr=False, compare=False)


def members_of(model_name: str) -> tuple[str, ...]:
    """The single models that make up `model_name` (ModelError for an unknown name)."""
    if model_name in ENSEMBLES:
        return ENSEMBLES[model_name]
    if model_name in KERAS_MODELS or model_name in SKLEARN_MODELS:
        return (model_name,)
    raise ModelError(f"unknown turbofan model {model_name!r} (known: {', '.join(MODEL_NAMES)})")


# --- Keras ------------------------------------------------------------------------------------
def build_keras(
    name: str,
    input_shape: tuple[int, ...],
    learning_rate: float,
    loss: Any = "mse",
    *,
    features: np.ndarray | None = None,
    width: int = FitConfig.mlp_width,
) -> Any:
    """A compiled Keras regressor; sigmoid output = RUL / cap.

    Sequence models take windows `(window, n_features)`; `mlp` takes rolling features and
    standardises them by a `Normalization` layer adapted to `features` (its training rows), so
    the scaler is saved inside the model.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    if name == "cnn":
        # 1D CNN in the spirit of Li et al. 2018 (DCNN): stacked wide temporal convolutions.
        x = inputs
        for _ in range(4):
            x = layers.Conv1D(16, 9, padding="same", activation="tanh")(x)
        x = layers.Conv1D(1, 3, padding="same", activation="tanh")(x)
        x = layers.Flatten()(x)
        x = layers.Dropout(0.4)(x)
        x = layers.Dense(100, activation="tanh")(x)
    elif name == "lstm":
        x = layers.LSTM(48, return_sequences=True)(inputs)
        x = layers.LSTM(32)(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(32, activation="relu")(x)
    elif name == "cnn_gru":
        x = layers.Conv1D(32, 5, padding="same", activation="relu")(inputs)
        x = layers.Conv1D(32, 5, padding="same", activation="relu")(x)
        x = layers.GRU(48)(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(32, activation="relu")(x)
    elif name == "mlp":
        if features is None:
            raise ModelError("mlp needs its training features to adapt its normalisation")
        norm = layers.Normalization()
        norm.adapt(features)
        x = layers.Dense(width, activation="relu")(norm(inputs))
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(max(width // 2, 1), activation="relu")(x)
    else:
        raise ModelError(f"unknown Keras model {name!r}")
    outputs = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model


def _loss(config: FitConfig) -> Any:
    import keras

    if config.loss == "huber":
        return keras.losses.Huber(delta=config.huber_delta)
    if config.loss == "mse":
        return "mse"
    raise ModelError(f"unknown loss {config.loss!r} (known: mse, huber)")


def fit_keras(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    *,
    seed: int,
    config: FitConfig,
    learning_rates: list[float] | None = None,
    sample_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
) -> Fitted:
    """Train one Keras model with early stopping on the unit-wise validation split.

    With `val=None` (the refit on all training units) it trains exactly `config.epochs` epochs,
    replaying `learning_rates` per epoch when given (the schedule the early-stopped run used).
    """
    import keras

    keras.utils.set_random_seed(seed)
    params: dict[str, Any] = {}
    if name in TABULAR_MODELS:
        params["scales"] = [int(k) for k in config.hgb_scales]
        train = (rolling_features(train[0], params["scales"]), train[1])
        if val is not None:
            val = (rolling_features(val[0], params["scales"]), val[1])
    x_train, y_train = train
    model = build_keras(
        name, x_train.shape[1:], config.learning_rate, _loss(config),
        features=x_train if name == "mlp" else None, width=config.mlp_width,
    )  # fmt: skip
    callbacks = []
    if learning_rates:  # replay the early-stopped run's schedule
        rates = list(learning_rates)
        callbacks.append(
            keras.callbacks.LearningRateScheduler(lambda e, _: rates[min(e, len(rates) - 1)])
        )
    if val is not None:
        callbacks += [
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=max(config.patience // 3, 2)),
            keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True),
        ]
    if val is not None and val_weight is not None:
        val = (val[0], val[1], val_weight)  # Keras's weighted validation loss
    result = model.fit(
        x_train, y_train, validation_data=val, epochs=config.epochs,
        batch_size=config.batch_size, callbacks=callbacks, verbose=0, shuffle=True,
        sample_weight=sample_weight,
    )  # fmt: skip
    history = {k: [float(v) for v in vals] for k, vals in result.history.items()}
    if val is not None:
        best = int(np.argmin(history["val_loss"])) + 1
        history["best_epoch"] = [float(best)]
    logger.info(
        "%s seed %d: %d epochs, best val_loss %.5f",
        name, seed, len(history["loss"]), min(history.get("val_loss", history["loss"])),
    )  # fmt: skip
    return Fitted(name=name, kind="keras", estimator=model, history=history, params=params)


def refit_member(
    member: Fitted,
    train: tuple[np.ndarray, np.ndarray],
    *,
    seed: int,
    config: FitConfig,
    sample_weight: np.ndarray | None = None,
) -> Fitted:
    """Refit `member` on all training windows for the epochs (trees) its early stopping chose."""
    from dataclasses import replace

    if member.kind == "sklearn":
        best = int(np.argmin(member.history["val_loss"])) + 1
        refit = fit_hgb(
            train, None, seed=seed, config=replace(config, hgb_max_iter=best),
            sample_weight=sample_weight,
        )  # fmt: skip
        refit.history = member.history
        return refit
    best = int(member.history["best_epoch"][0])
    rates = member.history.get("learning_rate", [])[:best] or None
    refit = fit_keras(
        member.name, train, None, seed=seed, config=replace(config, epochs=best),
        learning_rates=rates, sample_weight=sample_weight,
    )  # fmt: skip
    # Keep the split run's curves (the refit has no validation loss) next to the refit's loss.
    refit.history = {**member.history, "refit_loss": refit.history["loss"]}
    return refit


# --- scikit-learn -----------------------------------------------------------------------------
def bin_edges(x: np.ndarray, max_bins: int = 255) -> list[np.ndarray]:
    """Per feature, the inner edges of `max_bins` equal-count bins of `x` (unweighted)."""
    quantiles = np.linspace(0, 100, max_bins + 1)[1:-1]
    return [np.unique(np.percentile(x[:, j], quantiles)) for j in range(x.shape[1])]


def bin_codes(x: np.ndarray, edges: Sequence[np.ndarray]) -> np.ndarray:
    """`x` as bin codes (0 .. len(edges)) per feature: at most 255 distinct values each."""
    return np.column_stack(
        [np.searchsorted(e, x[:, j], side="right") for j, e in enumerate(edges)]
    ).astype(np.float64)


def fit_hgb(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    *,
    seed: int,
    config: FitConfig,
    sample_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
) -> Fitted:
    """Gradient boosting on rolling features; the number of trees is chosen on validation units.

    With `val=None` (the refit on all training units) it grows exactly `config.hgb_max_iter` trees.
    """
    scales = tuple(int(k) for k in config.hgb_scales)
    x_train, y_train = rolling_features(train[0], scales), train[1]
    member_params: dict[str, Any] = {"scales": list(scales)}
    if sample_weight is not None:
        # Given sample weights, scikit-learn (1.9) bins each feature by 254 WEIGHTED percentiles,
        # ~10x the whole unweighted fit. Binning here by plain percentiles first (<= 255 codes
        # per feature, which hgb then keeps as they are) leaves the weights on the loss, where
        # they matter; the codes' edges travel with the member (`bin_codes` at scoring).
        edges = bin_edges(x_train)
        x_train = bin_codes(x_train, edges)
        member_params["bin_edges"] = [e.tolist() for e in edges]
    params = {
        "learning_rate": config.hgb_learning_rate, "max_leaf_nodes": config.hgb_max_leaf_nodes,
        "min_samples_leaf": config.hgb_min_samples_leaf, "max_features": config.hgb_max_features,
        "l2_regularization": config.hgb_l2_regularization, "random_state": seed,
        "early_stopping": False,
    }  # fmt: skip
    if val is None:
        model = HistGradientBoostingRegressor(max_iter=config.hgb_max_iter, **params)
        model.fit(x_train, y_train, sample_weight=sample_weight)
        return Fitted(name="hgb", kind="sklearn", estimator=model,
                      history={"loss": [], "val_loss": []}, params=member_params)  # fmt: skip
    x_val, y_val = rolling_features(val[0], scales), val[1]
    if "bin_edges" in member_params:
        x_val = bin_codes(x_val, edges)
    probe = HistGradientBoostingRegressor(max_iter=config.hgb_max_iter, **params)
    probe.fit(x_train, y_train, sample_weight=sample_weight)
    # np.average with weights=None is np.mean: the unweighted path is unchanged.
    val_loss = [float(np.average((p - y_val) ** 2, weights=val_weight))
                for p in probe.staged_predict(x_val)]  # fmt: skip
    every = slice(None, None, 8)  # the training curve on every 8th window is enough for a plot
    sample_x, sample_y = x_train[every], y_train[every]
    sample_w = None if sample_weight is None else sample_weight[every]
    train_loss = [float(np.average((p - sample_y) ** 2, weights=sample_w))
                  for p in probe.staged_predict(sample_x)]  # fmt: skip
    best = int(np.argmin(val_loss)) + 1
    # Same seed and data: a refit with `best` trees is the probe cut at its best iteration.
    model = HistGradientBoostingRegressor(max_iter=best, **params).fit(
        x_train, y_train, sample_weight=sample_weight
    )
    logger.info("hgb seed %d: %d trees, best val_loss %.5f", seed, best, val_loss[best - 1])
    return Fitted(
        name="hgb", kind="sklearn", estimator=model,
        history={"loss": train_loss, "val_loss": val_loss}, params=member_params,
    )  # fmt: skip


def fit_member(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    seed: int,
    config: FitConfig,
    sample_weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
) -> Fitted:
    """Train one member (`members_of`) with early stopping on `val`; optional window weights."""
    weights = {"sample_weight": sample_weight, "val_weight": val_weight}
    if name in SKLEARN_MODELS:
        return fit_hgb(train, val, seed=seed, config=config, **weights)
    return fit_keras(name, train, val, seed=seed, config=config, **weights)


def predict_member(
    member: Fitted, windows: np.ndarray, features: dict[tuple[int, ...], np.ndarray] | None = None
) -> np.ndarray:
    """Scaled RUL (RUL / cap) of windows, one estimator call for the whole array.

    `features` caches the rolling features of these windows per scales, for the members of one
    ensemble that share them.
    """
    x = windows
    if member.name in TABULAR_MODELS:
        scales = tuple(member.params.get("scales", ()))
        cache = {} if features is None else features
        if scales not in cache:
            cache[scales] = rolling_features(windows, scales)
        x = cache[scales]
    if member.kind == "sklearn":
        if "bin_edges" in member.params:  # fitted on bin codes (`fit_hgb`, weighted)
            x = bin_codes(x, [np.asarray(e) for e in member.params["bin_edges"]])
        return trees.predict(member.estimator, x)
    out = keras_call(member)(np.asarray(x, dtype=member.estimator.inputs[0].dtype))
    return np.asarray(out, dtype="float64").reshape(-1)


def keras_call(member: Fitted) -> Any:
    """The Keras member's `model(x, training=False)` traced ONCE for any batch size.

    Not `predict_on_batch`: its tf.function traces on the first call and again when the batch
    size changes, per member and per loaded bundle, and TensorFlow counts those traces together
    (by the function's code): serving, where a request scores 1 unit or a batch, logged "N out of
    the last N calls ... triggered tf.function retracing". An input signature with a None batch
    dimension is traced once, and its concrete function never retraces. Same graph as
    `predict_on_batch` (its `predict_step` calls `model(x, training=False)`), same outputs.
    """
    if member.call is None:
        import tensorflow as tf

        model = member.estimator
        spec = model.inputs[0]
        signature = [tf.TensorSpec((None, *spec.shape[1:]), spec.dtype)]
        traced = tf.function(lambda x: model(x, training=False), input_signature=signature)
        member.call = traced.get_concrete_function()
    return member.call
