"""Domains: one module per kind of machine, all behind `machine_health.domains.base.Domain`."""

from __future__ import annotations

import importlib

from machine_health.domains.base import Domain

# name -> "module:attribute"; imported lazily so the API loads TensorFlow only when needed.
DOMAINS: dict[str, str] = {
    "vibration": "machine_health.domains.vibration:DOMAIN",
    "turbofan": "machine_health.domains.turbofan:DOMAIN",
}


def get_domain(name: str) -> Domain:
    """The domain object registered under `name` (KeyError for an unknown domain)."""
    module_name, _, attribute = DOMAINS[name].partition(":")
    return getattr(importlib.import_module(module_name), attribute)
