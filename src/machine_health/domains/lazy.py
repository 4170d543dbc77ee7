"""Lazy re-exports of a domain package: its `__init__.py` stays light (the CLI and the UI import
the package for `commands` and `ui`) and names its public names' modules instead of importing
them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) of package `package` re-exporting each name of `exports`
    (name -> submodule of the package) from its submodule, imported on first use."""

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return getattr_, sorted(exports)
