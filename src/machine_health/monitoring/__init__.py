"""Monitoring: Prometheus metrics of the serving side (and, later, drift and live performance)."""
