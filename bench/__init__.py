"""Benchmarks: ``python -m bench.<name> [--json]``; figures go to docs/benchmarks.md."""
