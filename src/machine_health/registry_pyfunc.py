"""MLflow "model from code" entry: makes a registered bundle loadable by generic pyfunc tooling.

Logged by `registry.log_bundle` as a file instead of a cloudpickled object, so reading a model
from the registry never unpickles code.
"""

import mlflow

from machine_health.registry import BundlePyfunc

mlflow.models.set_model(BundlePyfunc())
