"""Tests of llmcu.model: formats, quantization, the reference and oracle, quality."""
