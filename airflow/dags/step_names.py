"""The retraining steps in order, as `machine-health pipeline <step>` names them.

Plain data with no import: the DAG files never import the product's package, so this copies the
keys of `machine_health.pipeline.STEPS` (tests/unit/test_pipeline_steps.py keeps them equal).
"""

STEPS = ("check", "extract", "validate", "rescale", "train", "evaluate", "register", "reload")
