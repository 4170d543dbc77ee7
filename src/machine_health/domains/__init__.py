"""Domains: one package per kind of machine, all behind `machine_health.domains.base.Domain`.

Generic code enumerates `DOMAINS` and asks `get_domain(name)`; it never compares domain names.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from machine_health.domains.base import Domain

# name -> "package:attribute"; imported lazily so the API loads TensorFlow only when needed.
DOMAINS: dict[str, str] = {
    "vibration": "machine_health.domains.vibration:DOMAIN",
    "turbofan": "machine_health.domains.turbofan:DOMAIN",
    "acoustic": "machine_health.domains.acoustic:DOMAIN",
}


def get_domain(name: str) -> Domain:
    """The domain object registered under `name` (KeyError for an unknown domain)."""
    module_name, _, attribute = DOMAINS[name].partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def domain_module(name: str, submodule: str) -> ModuleType | None:
    """The light `<package>.<submodule>` of a registered domain (`commands`, `ui`), or None when
    the package has none. Imports the package and that module only, not the `Domain` object."""
    package = DOMAINS[name].partition(":")[0]
    try:
        return importlib.import_module(f"{package}.{submodule}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{submodule}":
            raise  # the module exists and one of its own imports is missing: say so
        return None
