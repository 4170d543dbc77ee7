"""Every registered domain implements the whole `Domain` interface (and its light modules)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from machine_health.domains import DOMAINS, domain_module, get_domain
from machine_health.domains.base import Domain, LabelMode
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
