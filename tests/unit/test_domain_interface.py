"""Every registered domain implements the whole `Domain` interface (and its light modules)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from machine_health.domains import DOMAINS, domain_module, get_domain
from machine_health.domains.base import PART_FUNCTIONS, Domain, LabelMode
from machine_health.domains.view import DomainView


@pytest.mark.parametrize("name", list(DOMAINS))
def test_domain_implements_the_interface(name: str) -> None:
    domain = get_domain(name)
    assert isinstance(domain, Domain) and not inspect.isabstract(type(domain))
    assert domain.name == name
    assert issubclass(domain.input_model, BaseModel)
    assert issubclass(domain.output_model, BaseModel)
    assert domain.primary_metrics
    assert set(domain.primary_metrics.values()) <= {"min", "max"}
    assert domain.label_mode in typing.get_args(LabelMode)
    assert isinstance(domain.min_labelled, int) and domain.min_labelled > 0
    assert domain.live_columns and all(isinstance(c, str) for c in domain.live_columns)
    for method in Domain.__abstractmethods__:
        assert callable(getattr(domain, method)), method
    assert domain.snapshot_schema().names[-1] == "label"


@pytest.mark.parametrize("name", list(DOMAINS))
def test_every_part_is_provided_with_the_interface_signature(name: str) -> None:
    """Each method `Domain` delegates is either overridden by the domain or a function of the
    same name in the module the domain declares for its part, taking the method's parameters
    (in order, same names; any further ones with a default)."""
    domain = get_domain(name)
    for part, functions in PART_FUNCTIONS.items():
        inherited = [f for f in functions if getattr(type(domain), f) is getattr(Domain, f)]
        if not inherited:
            continue
        assert part in domain.parts, f"{name} declares no module for its {part!r} part"
        module = domain.part(part)
        for function in inherited:
            implementation = getattr(module, function, None)
            assert callable(implementation), f"{module.__name__} has no {function}()"
            wanted = list(inspect.signature(getattr(Domain, function)).parameters)[1:]
            given = list(inspect.signature(implementation).parameters.values())
            assert [p.name for p in given[: len(wanted)]] == wanted, (module.__name__, function)
            assert all(p.default is not p.empty for p in given[len(wanted) :]), function


@pytest.mark.parametrize("name", list(DOMAINS))
def test_example_input_is_a_valid_request_from_the_real_data(name: str, data_dir: Path) -> None:
    domain = get_domain(name)
    example = domain.example_input(data_dir)
    domain.input_model.model_validate(example)


@pytest.mark.parametrize("name", list(DOMAINS))
def test_the_light_modules_the_cli_and_the_ui_find(name: str) -> None:
    view = getattr(domain_module(name, "ui"), "VIEW", None)
    assert isinstance(view, DomainView) and not inspect.isabstract(type(view))
    assert isinstance(view.performance_metric, str) and view.projection_colours
    commands = domain_module(name, "commands")
    assert commands is not None and callable(commands.train)
