"""Targets are data: ``targets/<name>/target.toml`` plus the smallest board layer in C.

The build logic is generic; everything that differs between targets (compiler, flags, board sources, how
to run the result) is read from the target's file here and checked, so that a typo is an error that says
where it is rather than a compiler failure later.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OptionError

KINDS = ("hosted", "baremetal", "linux")
RUN_METHODS = ("exec", "qemu-system", "qemu-user", "pyocd", "ssh")

# Flags every target gets: the numeric contract (runtime_c/README.md) needs plain IEEE float32 arithmetic
# in source order, so no FMA contraction and no fast-math.
CONTRACT_CFLAGS = ("-std=c99", "-ffp-contract=off", "-fno-fast-math")
WARNING_CFLAGS = ("-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str
    folder: Path
    cc: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    libs: tuple[str, ...]
    board_sources: tuple[Path, ...]
    run_method: str
    counter_unit: str
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def all_cflags(self) -> tuple[str, ...]:
        return (*CONTRACT_CFLAGS, *WARNING_CFLAGS, *self.cflags)


def _require(table: dict, key: str, where: str, kind: type) -> object:
    if key not in table:
        raise OptionError(f"{where}: missing `{key}`")
    value = table[key]
    if not isinstance(value, kind):
        raise OptionError(f"{where}: `{key}` must be a {kind.__name__}, got {value!r}")
    return value


def _strings(table: dict, key: str, where: str) -> tuple[str, ...]:
    values = table.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise OptionError(f"{where}: `{key}` must be a list of strings")
    return tuple(values)


def load_target(name: str, targets_dir: Path) -> Target:
    """Read and check ``targets/<name>/target.toml``."""
    path = targets_dir / name / "target.toml"
    if not path.is_file():
        known = sorted(p.parent.name for p in targets_dir.glob("*/target.toml"))
        raise OptionError(f"unknown target {name!r}; known targets: {', '.join(known)}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise OptionError(f"{path}: not valid TOML: {error}") from None
    where = str(path)
    kind = _require(raw, "kind", where, str)
    if kind not in KINDS:
        raise OptionError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    toolchain = _require(raw, "toolchain", where, dict)
    flags = raw.get("flags", {})
    board = raw.get("board", {})
    run = raw.get("run", {})
    method = run.get("method", "exec")
    if method not in RUN_METHODS:
        raise OptionError(f"{where}: run.method {method!r} is not one of {', '.join(RUN_METHODS)}")
    sources = tuple(path.parent / source for source in _strings(board, "sources", f"{where} [board]"))
    for source in sources:
        if not source.is_file():
            raise OptionError(f"{where}: board source {source} does not exist")
    cc = os.environ.get("CC") if kind == "hosted" and os.environ.get("CC") else toolchain.get("cc", "gcc")
    return Target(
        name=_require(raw, "name", where, str),
        description=raw.get("description", ""),
        kind=kind,
        folder=path.parent,
        cc=cc,
        cflags=_strings(flags, "cflags", f"{where} [flags]"),
        ldflags=_strings(flags, "ldflags", f"{where} [flags]"),
        libs=_strings(flags, "libs", f"{where} [flags]"),
        board_sources=sources,
        run_method=method,
        counter_unit=run.get("counter_unit", "ns"),
        raw=raw,
    )
