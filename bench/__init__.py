"""Benchmarks: figures measured against a reference in the same run (see README, Performance)."""
