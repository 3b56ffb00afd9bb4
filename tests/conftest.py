"""Shared fixtures: the library on sys.path, and the model files (from LLMCU_MODELS or ../shared/models)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "site_scons"))
# The run's own cache of quantized weights (llmcu.model.quantcache), shared by its scons builds and removed at the
# end: a user's cache, filled by other code or another numpy, must not decide what the tests see.
if not os.environ.get("LLMCU_QUANT_CACHE_DIR"):
    os.environ["LLMCU_QUANT_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmcu-test-quantized-")
    atexit.register(shutil.rmtree, os.environ["LLMCU_QUANT_CACHE_DIR"], True)
pytest_plugins = [
    "llmcu.hil.plugin",
    "pytester",
    "support.faultcatalog",
]  # --target/--hil/--hardware-map, `device` (tests/hil)


def _model_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("LLMCU_MODELS", "").split(os.pathsep) if p]
    dirs.append(ROOT.parent / "shared" / "models")
    return [d if d.is_absolute() else (ROOT / d) for d in dirs]


def find_model_file(name: str) -> Path | None:
    for directory in _model_dirs():
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _model_file_or_skip(name: str) -> Path:
    path = find_model_file(name)
    if path is None:
        pytest.skip(f"{name} not found (set LLMCU_MODELS)")
    return path


@pytest.fixture(scope="session")
def shared_build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build root for the whole run, shared by its pytest-xdist workers (their temporary folders sit side by
    side): the stories260K programs and twins that several test files read are built once. A second worker's scons
    waits for the first on the build folder's lock (llmcu.core.fileio.lock_dir) and finds it done. Tests only read
    what is built here; one that changes a build makes its own."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-builds"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def stories260k() -> Path:
    return _model_file_or_skip("stories260K.bin")


@pytest.fixture(scope="session")
def tok512() -> Path:
    return _model_file_or_skip("tok512.bin")


@pytest.fixture(scope="session")
def tokenizer_32k() -> Path:
    return _model_file_or_skip("tokenizer.bin")


@pytest.fixture(scope="session")
def golden_cases() -> list[dict]:
    path = ROOT.parent / "shared" / "golden" / "stories260K_llama2c_run.json"
    if not path.is_file():
        pytest.skip("golden outputs not found (../shared/golden)")
    return json.loads(path.read_text())
