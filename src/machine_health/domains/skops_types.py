"""The only types a model file (skops) of this project may hold, and its loader.

skops refuses types it does not know unless they are passed as trusted, but its own defaults
trust every scikit-learn estimator and numpy function, and a prefix test (`sklearn.`, `numpy.`)
trusted anything under those packages (e.g. `numpy.exp` as a `FunctionTransformer`'s function,
or any estimator class). Here every type named anywhere in the file's schema must be on
`ALLOWED`: the exact types the bundles save (the vibration scaler, detector and classifier, the
turbofan gradient-boosting member, the pipeline's rescale transform) and their parts. A new
estimator in a bundle means adding its types here, on purpose.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from machine_health.errors import ModelError

_HGB = "sklearn.ensemble._hist_gradient_boosting"
_BUILTINS = ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType")
_NUMPY = ("ndarray", "dtype", "float64", "float32", "int64", "int32", "int8", "uint8", "uint32",
          "uint64", "bool_", "intp")  # fmt: skip
ALLOWED: frozenset[str] = frozenset(
    {
        # containers and scalars of the saved objects
        *(f"builtins.{t}" for t in _BUILTINS),
        # arrays and their element types
        *(f"numpy.{t}" for t in _NUMPY),
        "numpy.random._generator.Generator",
        # vibration: scaler, detector, classifier (+ its label encoder)
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.covariance._shrunk_covariance.LedoitWolf",
        "sklearn.preprocessing._label.LabelEncoder",
        f"{_HGB}.gradient_boosting.HistGradientBoostingClassifier",
        # turbofan: the gradient-boosting member
        f"{_HGB}.gradient_boosting.HistGradientBoostingRegressor",
        # the fitted trees and bins of both
        f"{_HGB}.predictor.TreePredictor",
        f"{_HGB}.binning._BinMapper",
        # their losses and links (squared error; binary and multi-class log loss)
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss._loss.CyHalfSquaredError",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfMultinomialLoss",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.link.Interval",
    }
)


def _named_types(node: Any, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
            found.add(f"{node['__module__']}.{node['__class__']}")
        for value in node.values():
            _named_types(value, found)
    elif isinstance(node, list):
        for value in node:
            _named_types(value, found)
    return found


def types_in(file: Path) -> set[str] | None:
    """Every type a skops file names (read from its schema, nothing is loaded); None when the
    file is not a readable skops archive (skops' own loader then says why)."""
    try:
        with zipfile.ZipFile(file) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return _named_types(schema, set())


def load_skops(file: Path) -> Any:
    """Load a skops file whose every type is on `ALLOWED`; ModelError naming the others."""
    import skops.io as sio

    foreign = sorted((types_in(file) or set()) - ALLOWED)
    if foreign:
        raise ModelError(f"{file.name}: refuses to load types outside the allow-list {foreign}")
    untrusted = sio.get_untrusted_types(file=file)
    if extra := sorted(set(untrusted) - ALLOWED):  # skops saw a type the schema walk did not
        raise ModelError(f"{file.name}: refuses to load types outside the allow-list {extra}")
    return sio.load(file, trusted=untrusted)
