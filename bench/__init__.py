"""Benchmarks (not tests): `python -m bench.run [--quick]` from the repository root."""
