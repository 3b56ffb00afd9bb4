"""The command lines that are not SCons: llmcu-checkpoint, llmcu-oracle, llmcu-codegen (pyproject.toml
[project.scripts]; also ``python -m llmcu.cli.<name>``). The top layer: each uses the library and nothing uses it.
"""
