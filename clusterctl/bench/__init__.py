"""Benchmarks: measured on real sandbox clusters, printed as JSON and a table."""
