"""HIL tests build their firmware from the suite's model files (LLMCU_MODELS or ../shared/models)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def hil_build_env(stories260k: Path, tok512: Path) -> dict[str, str]:
    """Overrides the plugin's: the firmware build finds the models where the rest of the suite does."""
    dirs = dict.fromkeys(str(path.parent) for path in (stories260k, tok512))
    return {"LLMCU_MODELS": os.pathsep.join(dirs), "LLMCU_OFFLINE": "1"}
