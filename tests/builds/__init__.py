"""Tests of llmcu.build: options, the planner, code generation, boards and their C board layer, builds."""
