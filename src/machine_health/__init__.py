"""machine-health: predictive maintenance that closes the loop from prediction to retraining."""

import os

__version__ = "0.1.0"

# MLflow 3 starts a usage-telemetry client when it is imported, which reports to MLflow's own
# servers. A maintenance platform that runs on premises and in air-gapped clusters sends nothing
# anywhere unasked: opted out here, before any module of the package imports mlflow. An operator
# who wants to share the telemetry sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
