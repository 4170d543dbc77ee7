"""Schemathesis with ALL its checks against the LIVE OpenAPI schema of a real uvicorn, every
operation, once per role (viewer, operator, admin).

The run is schemathesis' own engine, as `schemathesis run --checks all` runs it: its four phases
(the schema's examples, coverage of boundaries and invalid values, property-based fuzzing, and
stateful sequences following the links it infers), over HTTP, with every check schemathesis
4.32 registers (`CHECKS`, asserted to be all of them): no 5xx; status codes, content types,
headers and bodies as documented; invalid data refused and valid data accepted; no resource
usable after its DELETE or missing after its creation; authentication not ignored; the
`Allow` header of a 405; a missing required header refused. `object_level_authorization` needs
two users of one role declared as peers (`[auth.wfc]`) and does not run here: the roles are
tested one after the other instead.

Bounded for `make test`: `MH_FUZZ_EXAMPLES` examples per operation and phase (default 20),
derandomized (the same cases every run: a failure is reproducible). `make bench` runs it longer
(bench/reliability.py) and records the figures in docs/BENCHMARKS.md. The figures are printed,
and written to `MH_FUZZ_REPORT` when set.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from tests.support.models import TrainedModels
from tests.support.reliability.scenarios import build_registry
from tests.support.servers import Server, start_uvicorn
from tests.support.settings import make_settings
from tests.support.users import PASSWORDS, create_users

EXAMPLES = int(os.environ.get("MH_FUZZ_EXAMPLES", "20"))
SEED = 20261206
#: admin last: its cases may register, demote, disable or delete users
ROLES = ("viewer", "operator", "admin")

load_all_checks()
ALL_CHECKS = sorted(CHECKS.get_all_names())
#: The checks that cannot hold for one operation BY DESIGN, each with the reason. Everything
#: else the schema says, so a check can hold (bounds, formats and strict types in the schema).
EXCLUDED: dict[tuple[str, str], dict[str, str]] = {
    # A window wider than MH_STATS_MAX_DAYS is refused (422, not clamped: the counts of a
    # clamped window would answer another question); no schema relates two query parameters.
    ("GET", "/stats/overview"): {
        "positive_data_acceptance": "since..until at most MH_STATS_MAX_DAYS apart",
    },
    # A projection needs archived inputs with at least 2 varying features: with an empty or
    # uniform archive a schema-valid request is refused (422), a state no schema describes.
    ("GET", "/projection/{domain}"): {
        "positive_data_acceptance": "needs archived predictions to project",
    },
    # A cycle more than MH_MAX_CYCLE_JUMP after the unit's last known one is refused (422: one
    # wrong cycle must not hijack a unit); the bound depends on the unit's archived history
    # (and in a batch, a unit's cycles must increase: a relation between items).
    ("POST", "/predict/turbofan"): {"positive_data_acceptance": "cycle jump vs the unit's past"},
    ("POST", "/predict-test/turbofan"): {
        "positive_data_acceptance": "cycle jump vs the unit's past",
    },
    ("POST", "/predict/turbofan/batch"): {
        "positive_data_acceptance": "cycle jump vs the unit's past; cycles increase per unit",
    },
    # A window must last as long as the served model's feature window (len(samples) /
    # sample_rate, e.g. 10.7 ms): a relation between two fields and the model, 422 below it.
    ("POST", "/predict/vibration"): {"positive_data_acceptance": "window shorter than the model's"},
    ("POST", "/predict-test/vibration"): {
        "positive_data_acceptance": "window shorter than the model's",
    },
    ("POST", "/predict/vibration/batch"): {
        "positive_data_acceptance": "window shorter than the model's",
    },
    # A failure cycle is bounded by the unit's archived cycles (at least its last, at most
    # MH_TURBOFAN_MAX_RUL_LABEL after its first): 422 for a unit's history no schema knows.
    ("POST", "/assets/{unit_id}/failure"): {
        "positive_data_acceptance": "bounded by the unit's archived cycles",
    },
}

CASES: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()
OPERATIONS: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_api(
    tmp_path_factory: pytest.TempPathFactory, store_uri: str, trained_models: TrainedModels
) -> Iterator[Server]:
    # A registry of its own: the fuzzer may promote and roll back versions as admin.
    tmp = tmp_path_factory.mktemp("fuzz")
    reg = build_registry(tmp / "registry" / "var", trained_models)
    settings = make_settings(
        tmp, store_uri, mlflow_tracking_uri=reg.tracking_uri, login_max_failures=100_000
    )
    create_users(settings)
    server = start_uvicorn(settings, tmp / "logs", timeout_s=120)
    yield server
    server.stop()
    _report(server.log)


def _report(log: Path) -> None:
    summary = {
        "cases": sum(CASES.values()),
        "per_role": dict(CASES),
        "statuses": dict(sorted(STATUSES.items())),
        "operations": OPERATIONS,
        "examples_per_operation": EXAMPLES,
        "checks": ALL_CHECKS,
        "excluded": {f"{m} {p}": c for (m, p), c in EXCLUDED.items()},
    }
    print(f"\nschemathesis: {json.dumps(summary)}")  # the figures the benchmark records
    target = os.environ.get("MH_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps(summary, indent=2))
    assert "Traceback" not in log.read_text()


def _token(url: str, role: str) -> str:
    answer = httpx.post(
        f"{url}/token", data={"username": role, "password": PASSWORDS[role]}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def _config(token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "headers": {"Authorization": f"Bearer {token}"},
        "request-timeout": 120,
        "continue-on-failure": True,  # every failure of an operation, not the first one
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {name: {"enabled": True} for name in ALL_CHECKS},
        "operations": [
            {"include-method": method, "include-path": path,
             "checks": {name: {"enabled": False} for name in checks}}
            for (method, path), checks in EXCLUDED.items()
        ],
    })  # fmt: skip


def _failures(recorder: Any) -> Iterator[str]:
    for nodes in recorder.checks.values():
        for node in nodes:
            if node.status != Status.FAILURE or node.failure_info is None:
                continue
            failure = node.failure_info.failure
            yield (
                f"{recorder.label} [{node.name}] {failure.title}: {failure.message[:600]}\n"
                f"    {node.failure_info.code_sample[:1500]}"
            )


def run_schemathesis(url: str, role: str) -> list[str]:
    """One engine run with `role`'s token; the failures and errors it found."""
    schema = schemathesis.openapi.from_url(
        f"{url}/openapi.json", config=_config(_token(url, role)), timeout=30
    )
    problems: list[str] = []
    labels: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            if event.label:
                labels.add(event.label)
            CASES[role] += len(event.recorder.cases)
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    STATUSES[str(interaction.response.status_code)] += 1
            problems.extend(_failures(event.recorder))
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: error {type(event.value).__name__}: {event.value}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            problems.extend(f"after the run: {f.title}: {f.message}" for f in event.failures)
    OPERATIONS[role] = len(labels)
    return problems


def test_all_checks_configured() -> None:
    """Every check schemathesis registers is enabled (a new one in an upgrade runs too)."""
    assert len(ALL_CHECKS) >= 14, ALL_CHECKS
    assert {"not_a_server_error", "positive_data_acceptance", "use_after_free"} <= set(ALL_CHECKS)


@pytest.mark.parametrize("role", ROLES)
def test_schemathesis_all_checks(fuzz_api: Server, role: str) -> None:
    problems = run_schemathesis(fuzz_api.url, role)
    assert OPERATIONS[role] >= 20, OPERATIONS
    assert not problems, f"{len(problems)} failure(s):\n" + "\n".join(problems)
