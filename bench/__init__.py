"""Benchmarks: ``python -m bench <name>``; each ends with ``RESULT <figure> <value> <unit>`` lines."""
