"""Benchmarks of gradeflow: ``python -m bench.run`` (``make bench``); see bench/README.md."""
