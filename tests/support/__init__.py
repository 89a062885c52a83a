"""Helpers of the tests alone, importable as `support` (pytest's pythonpath has tests/ on it).

What the benchmarks and the demo share with the tests lives in audit_devtools (scripts/devtools/).
"""
