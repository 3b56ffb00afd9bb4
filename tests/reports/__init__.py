"""Tests of llmcu.reports: the benchmark's bookkeeping and run reports."""
