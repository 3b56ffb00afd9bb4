"""The stories260K q8 builds that the console, monitor, debug and progress tests share (host program and QEMU
twin), built once per session, the two at the same time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.build import scons


@pytest.fixture(scope="session")
def q8_build_root(shared_build_root: Path, stories260k: Path) -> Path:
    root = shared_build_root

    def build(target: str) -> None:
        scons([f"target={target}", "model=260k", "quant=q8", f"build_dir={root}"], stories260k.parent)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(build, ("host", "qemu-m7")))
    return root
