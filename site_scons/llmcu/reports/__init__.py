"""Figures over many builds and runs: the benchmark matrix (bench) and run reports (report)."""
