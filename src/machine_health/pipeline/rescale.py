"""Step 3: fit the feature scaling on the training split; write the rescaled set and the transform.

The transform is fitted by the DOMAIN's own code (`Domain.rescale`), exactly as its `train`
fits it (same data, split and seed), and the train step checks that the bundle it trains carries
this very transform (`check_bundle_transform`): serving only ever applies the transform inside
the bundle, so there is never a second scaler that could drift apart from the model. Each
domain's module docstring (`domains/<name>/retrain.py`) says what its transform is.
"""

from __future__ import annotations

import logging
from typing import Any

from machine_health.domains import get_domain
from machine_health.domains.base import ModelBundle
from machine_health.pipeline import datasets
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.steps import StepRun, step
from machine_health.pipeline.workspace import Workspace, write_json_atomic

logger = logging.getLogger(__name__)

RESCALED = "rescaled.parquet"
#: the seed of every retrain's split and fit (rescale and train must fit the same transform)
SEED = 0


@step("rescale")
def run(job: StepRun) -> dict[str, Any]:
    """Fit and write the run's feature transform and rescaled training set."""
    settings, domain, ws = job.settings, job.domain, job.ws
    training = datasets.training_set(settings, domain, read_snapshot(ws))
    result = get_domain(domain).rescale(settings, training, ws)
    write_json_atomic(ws.file("training_facts.json"), training.facts)
    return {"rescaled": str(ws.file(RESCALED)), **result, **training.facts}


def check_bundle_transform(domain: str, bundle: ModelBundle, ws: Workspace) -> float:
    """Largest difference between the bundle's fitted scaling and the rescale step's.

    0 means the bundle carries exactly the transform this run fitted.
    """
    return get_domain(domain).transform_gap(bundle, ws)
