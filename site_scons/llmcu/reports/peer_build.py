"""llama.cpp, the peer of the benchmark, built here from the source that PyPI's ``llama-cpp-python`` sdist vendors:
fetched with pip (pinned, sha256-checked), unpacked once, and built with CMake into ``build/peer/`` for the host and,
statically, for aarch64 (the RZ/V2L's Cortex-A55), together with ``tools/peer/peer_generate.cpp``, llmcu's driver
on llama.cpp's API that runs a benchmark exactly as llmcu's program does. Builds are cached: a machine's program is
rebuilt only when its configuration (the stamp beside it) or the driver changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import LlmcuError
from ..core.fileio import write_text_atomic
from ..core.paths import ROOT

PEER_DIR = ROOT / "tools" / "peer"
CACHE_DIR = ROOT / "build" / "peer"


class PeerBuildError(LlmcuError):
    """llama.cpp's source could not be fetched or built."""


@dataclass(frozen=True)
class PeerSource:
    """The pinned release: the sdist that vendors llama.cpp, and what llama.cpp it vendors."""

    package: str
    version: str
    sha256: str
    llama_cpp_commit: str  # the vendored tree's git HEAD (.git/modules/vendor/llama.cpp/HEAD in the sdist)
    llama_cpp_date: str  # that commit's date
    # llama.cpp's build number (bNNNN) counts the commits of its history; the sdist holds a shallow clone (one
    # commit), so the number is not in it and the commit stands for the build.

    @property
    def archive_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}.tar.gz"

    def record(self) -> dict[str, str]:
        return {**asdict(self), "llama_cpp_build": f"commit {self.llama_cpp_commit[:9]} of {self.llama_cpp_date}"}


LLAMA_CPP = PeerSource(
    package="llama-cpp-python",
    version="0.3.36",
    sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    llama_cpp_commit="0c1e57098bba43ac29e6e3b677cdceebdd22334f",
    llama_cpp_date="2026-10-01",
)


@dataclass(frozen=True)
class PeerMachine:
    """How llama.cpp is configured for one machine of the benchmark: the same instruction sets as llmcu's build
    for it (x86-64 with AVX2 and FMA on the host; armv8.2-a with dotprod and fp16 on the A55), no OpenMP."""

    name: str
    cmake_args: tuple[str, ...]
    toolchain: str = ""  # a CMake toolchain file in tools/peer, for a cross build

    def configure_command(self, source: Path, build: Path) -> list[str]:
        command = ["cmake", "-S", str(PEER_DIR), "-B", str(build), f"-DLLAMA_CPP_DIR={source}",
                   "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", *self.cmake_args]  # fmt: skip
        if self.toolchain:
            command.append(f"-DCMAKE_TOOLCHAIN_FILE={PEER_DIR / self.toolchain}")
        return command


MACHINES = {
    "host": PeerMachine("host", ("-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON")),
    "aarch64": PeerMachine(
        "aarch64", ("-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",), toolchain="aarch64-linux-gnu.cmake"
    ),
}

Progress = Callable[[str], None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(cache: Path = CACHE_DIR, source: PeerSource = LLAMA_CPP, progress: Progress = print) -> Path:
    """The sdist in ``cache``, downloaded with pip (from the indexes pip is configured with) unless it is there;
    its sha256 must be the pinned one."""
    archive = cache / source.archive_name
    if archive.is_file() and _sha256(archive) == source.sha256:
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    progress(f"peer: pip download {source.package}=={source.version} (the sdist vendors llama.cpp)")
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                   "-q", "-d", scratch, f"{source.package}=={source.version}"]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        fetched = Path(scratch) / source.archive_name
        if result.returncode != 0 or not fetched.is_file():
            raise PeerBuildError(f"cannot download {source.package} {source.version}'s sdist with pip:\n"
                                 f"{(result.stderr or result.stdout).strip()[-1500:]}")  # fmt: skip
        found = _sha256(fetched)
        if found != source.sha256:
            raise PeerBuildError(f"{source.archive_name}: sha256 {found}, expected {source.sha256} (pinned in "
                                 "llmcu.reports.peer_build.LLAMA_CPP)")  # fmt: skip
        os.replace(fetched, archive)
    return archive


def source_tree(cache: Path = CACHE_DIR, source: PeerSource = LLAMA_CPP, progress: Progress = print) -> Path:
    """llama.cpp's source, unpacked from the sdist into ``cache`` once (into a temporary folder, renamed when
    whole, so that an interrupted unpacking is never taken for a tree)."""
    tree = cache / f"{source.package}-{source.version}"
    llama_cpp = tree / "vendor" / "llama.cpp"
    if (llama_cpp / "include" / "llama.h").is_file():
        return llama_cpp
    archive = fetch_sdist(cache, source, progress)
    progress(f"peer: unpacking {archive.name}")
    with tempfile.TemporaryDirectory(dir=cache) as scratch, tarfile.open(archive) as bundle:
        bundle.extractall(scratch, filter="tar")
        unpacked = Path(scratch) / archive.name.removesuffix(".tar.gz")
        if not (unpacked / "vendor" / "llama.cpp" / "include" / "llama.h").is_file():
            raise PeerBuildError(f"{archive.name} holds no vendor/llama.cpp")
        shutil.rmtree(tree, ignore_errors=True)
        os.replace(unpacked, tree)
    return llama_cpp


def _stamp(machine: PeerMachine, source: PeerSource, llama_cpp: Path) -> str:
    sources = sorted(PEER_DIR.iterdir())
    driver = {path.name: _sha256(path) for path in sources if path.is_file()}
    return json.dumps({"source": source.record(), "tree": str(llama_cpp), "machine": asdict(machine),
                       "driver": driver}, indent=2, sort_keys=True)  # fmt: skip


def peer_program(machine_name: str, cache: Path = CACHE_DIR, source: PeerSource = LLAMA_CPP,
                 progress: Progress = print) -> Path:  # fmt: skip
    """``peer_generate`` for ``machine_name`` (host or aarch64), built unless the cached one has the same stamp."""
    if machine_name not in MACHINES:
        raise PeerBuildError(f"peer machine {machine_name!r}: known are {', '.join(MACHINES)}")
    machine = MACHINES[machine_name]
    if shutil.which("cmake") is None:
        raise PeerBuildError("cmake not found: install it (tools/setup.sh does)")
    llama_cpp = source_tree(cache, source, progress)
    build = cache / machine.name
    program = build / "peer_generate"
    stamp_file = build / "llmcu-peer.stamp"
    stamp = _stamp(machine, source, llama_cpp)
    if program.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return program
    stamp_file.unlink(missing_ok=True)  # the program is trusted again only when this build completes
    progress(f"peer: building llama.cpp {source.llama_cpp_commit[:9]} for {machine.name} (a few minutes, once)")
    steps = (machine.configure_command(llama_cpp, build),
             ["cmake", "--build", str(build), "--target", "peer_generate", "-j", str(os.cpu_count() or 2)])  # fmt: skip
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise PeerBuildError(f"building llama.cpp for {machine.name} failed: {' '.join(command)}\n"
                                 f"{(result.stdout + result.stderr).strip()[-3000:]}")  # fmt: skip
    write_text_atomic(stamp_file, stamp)
    return program
