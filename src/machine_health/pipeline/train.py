"""Step 4: train the challenger on the base data + the archived labelled data; log it to MLflow.

The model is the domain's own (`Domain.train`, which logs its training params, metrics, plots
and drift reference); this step logs the run's params (run id, interval, snapshot sha256 and row
counts, git commit) and the bundle as the run's model WITHOUT registering it (the register step
does, after the gate). The bundle is also saved in the workspace for the evaluate step.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from machine_health import registry
from machine_health.domains import get_domain
from machine_health.errors import ModelError
from machine_health.pipeline import datasets
from machine_health.pipeline.extract import read_snapshot
from machine_health.pipeline.rescale import SEED, check_bundle_transform
from machine_health.pipeline.steps import StepRun, step

logger = logging.getLogger(__name__)

BUNDLE_DIR = "challenger"
#: largest allowed gap between the bundle's scaling and the rescale step's (float round-off).
TRANSFORM_TOLERANCE = 1e-9


@step("train")
def run(job: StepRun) -> dict[str, Any]:
    """Train the challenger, check its transform is the rescale step's, log the MLflow run."""
    settings, domain, run_id, ws = job.settings, job.domain, job.run_id, job.ws
    extracted = job.inputs["extract"]
    rescaled = job.inputs["rescale"]
    training = datasets.training_set(settings, domain, read_snapshot(ws))
    tags = {"domain": domain, "pipeline_run_id": run_id, "snapshot_sha256": extracted["sha256"]}
    registry.end_abandoned_runs(settings, {"domain": domain, "pipeline_run_id": run_id})
    with registry.start_run(settings, run_name=f"retrain-{domain}", tags=tags) as mlflow_run:
        registry.log_params(
            {
                "domain": domain,
                "run_id": run_id,
                "interval_start": ws.interval["start"],
                "interval_end": ws.interval["end"],
                "snapshot_sha256": extracted["sha256"],
                "snapshot_rows": extracted["rows"],
                "git_commit": registry.git_commit(),
                "seed": SEED,
                # what the gate's reference slice is: a model trained under another rule may
                # have fitted it (see pipeline.evaluate)
                "reference_rule": get_domain(domain).reference_rule,
                **{f"data_{k}": v for k, v in training.facts.items()},
            }
        )
        trained = get_domain(domain).train(settings, training, ws)
        bundle, metrics = trained.bundle, trained.metrics
        gap = check_bundle_transform(domain, bundle, ws)
        if not gap <= TRANSFORM_TOLERANCE:
            raise ModelError(
                f"the trained bundle's scaling differs from the rescale step's by {gap:g} "
                f"(see {rescaled['transform']}): refusing a model whose transform is not the "
                "one this run fitted"
            )
        registry.log_metrics({"transform_gap": gap})
        logged = registry.log_bundle(settings, bundle, register=False)
    target = ws.file(BUNDLE_DIR)
    if target.exists():
        shutil.rmtree(target)
    bundle.save(target)
    return {
        "mlflow_run_id": mlflow_run.info.run_id,
        "model_uri": logged.source,
        "bundle": str(target),
        "transform_gap": gap,
        **{k: float(v) for k, v in metrics.items()},
    }
