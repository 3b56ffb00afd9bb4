"""Tests of llmcu.builder and llmcu.platform: options, the planner, code generation, boards and their C board
layer, builds."""
