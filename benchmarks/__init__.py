"""Benchmark scripts (run with ``python -m benchmarks.NAME``); see docs/performance.md."""
