"""Tests of llmcu.power: meters, energy, estimates."""
