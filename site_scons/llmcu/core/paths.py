"""Where the project's own files are: the checkout's root and its folders (the bottom of the library: every layer may
use these, none of them imports anything)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # site_scons/llmcu/core/paths.py
RUNTIME_DIR = ROOT / "runtime_c"
TARGETS_DIR = ROOT / "targets"
MODELS_DIR = ROOT / "models"
