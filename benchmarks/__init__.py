"""Measurement tools, run from a checkout (`python -m benchmarks.NAME`); not installed."""
