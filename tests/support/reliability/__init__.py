"""The fault harness and scenarios of tests/reliability and bench/reliability.py."""
