"""machine-health: predictive maintenance that closes the loop from prediction to retraining."""

__version__ = "0.1.0"
