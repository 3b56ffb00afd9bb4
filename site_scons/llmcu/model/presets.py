"""Model presets: ``models/<name>.toml`` names a model's files (where to download them, their size and sha256) and
the shape its checkpoint must have. llmcu.model.models finds the files; llmcu.model.download fetches them."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import ModelConfig
from ..core.errors import CheckpointError, OptionError
from ..core.fileio import read_toml

SHAPE_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")

_REQUIRED = object()
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_FILE_KEYS = {"filename": str, "url": str, "size": int, "sha256": str}
_TOP_KEYS = {"name", "description", "checkpoint", "tokenizer", "shape"}


@dataclass(frozen=True)
class RemoteFile:
    """A file a model needs: its name on disk, where to download it, and (when known) how to verify it."""

    filename: str
    url: str
    size: int | None = None
    sha256: str | None = None

    def describe(self) -> str:
        size = f"{self.size} bytes" if self.size is not None else "size not recorded"
        sha = f"sha256 {self.sha256}" if self.sha256 is not None else "sha256 not recorded"
        return f"{self.url} ({size}, {sha})"


@dataclass(frozen=True)
class Preset:
    """A named model from ``models/<name>.toml``: its files and the shape its checkpoint must have. A GGUF
    checkpoint (``*.gguf``) brings its vocabulary, so its preset may have no ``[tokenizer]`` (None here)."""

    name: str
    description: str
    checkpoint: RemoteFile
    tokenizer: RemoteFile | None
    shape: ModelConfig
    source: Path | None = None

    def shape_mismatches(self, config: ModelConfig) -> list[str]:
        """One line per field where ``config`` differs from this preset's shape (empty when they agree)."""
        fields = (*SHAPE_FIELDS, "shared_classifier")
        return [
            f"{name} is {getattr(config, name)}, expected {getattr(self.shape, name)}"
            for name in fields
            if getattr(config, name) != getattr(self.shape, name)
        ]

    def check_shape(self, config: ModelConfig, path: str | os.PathLike[str]) -> None:
        """Raise :class:`CheckpointError` if the checkpoint at ``path`` does not have this preset's shape."""
        problems = self.shape_mismatches(config)
        if problems:
            raise CheckpointError(
                f"{path} is not the checkpoint of preset '{self.name}': {'; '.join(problems)}. "
                f"Use {self.checkpoint.url}, or build your file with model={path} tokenizer=<its tokenizer>."
            )


def list_presets(models_dir: str | os.PathLike[str]) -> dict[str, Preset]:
    """Every preset in ``models_dir``, smallest model first."""
    presets = [_parse_preset(path) for path in sorted(Path(models_dir).glob("*.toml"))]
    presets.sort(key=lambda preset: (preset.shape.parameter_count(), preset.name))
    return {preset.name: preset for preset in presets}


def load_preset(name: str, models_dir: str | os.PathLike[str]) -> Preset:
    """The preset called ``name`` (case-insensitive); :class:`OptionError` listing the known ones if none."""
    presets = list_presets(models_dir)
    preset = find_preset(name, presets)
    if preset is None:
        raise OptionError(unknown_preset_message(name, presets, Path(models_dir)))
    return preset


def find_preset(name: str, presets: Mapping[str, Preset]) -> Preset | None:
    return presets.get(name) or presets.get(name.lower())


def _parse_preset(path: Path) -> Preset:
    data = read_toml(path)
    where = str(path)
    _reject_unknown_keys(data, _TOP_KEYS, where)
    name = _field(data, "name", str, where)
    if name != path.stem:
        raise OptionError(f"{path}: name is '{name}' but the file is {path.name}; make them the same.")
    checkpoint = _parse_remote(_table(data, "checkpoint", where), f"{where} [checkpoint]")
    tokenizer = None
    if "tokenizer" in data:
        tokenizer = _parse_remote(_table(data, "tokenizer", where), f"{where} [tokenizer]")
    elif not brings_its_vocabulary(checkpoint):
        raise OptionError(
            f"{where}: 'tokenizer' is missing; add it to the preset file (only a .gguf checkpoint brings its own "
            "vocabulary)."
        )
    return Preset(
        name=name,
        description=_field(data, "description", str, where, default=""),
        checkpoint=checkpoint,
        tokenizer=tokenizer,
        shape=_parse_shape(_table(data, "shape", where), f"{where} [shape]"),
        source=path,
    )


def brings_its_vocabulary(checkpoint: RemoteFile) -> bool:
    """A GGUF file holds its vocabulary (``tokenizer.ggml.*``): its preset needs no tokenizer file."""
    return checkpoint.filename.lower().endswith(".gguf")


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    return _field(data, key, dict, where)


def _field(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    if key not in table:
        if default is _REQUIRED:
            raise OptionError(f"{where}: '{key}' is missing; add it to the preset file.")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise OptionError(f"{where}: '{key}' must be a {_kind_name(kind)}, not {value!r}.")
    return value


def _kind_name(kind: type) -> str:
    return {str: "string", int: "whole number", bool: "boolean (true/false)", dict: "table"}[kind]


def _reject_unknown_keys(table: Mapping[str, Any], allowed: Sequence[str] | set[str], where: str) -> None:
    unknown = ", ".join(sorted(set(table) - set(allowed)))
    if unknown:
        raise OptionError(f"{where}: unknown key(s) {unknown}; the allowed keys are {', '.join(sorted(allowed))}.")


def _parse_remote(table: Mapping[str, Any], where: str) -> RemoteFile:
    _reject_unknown_keys(table, _FILE_KEYS.keys(), where)
    filename = _field(table, "filename", str, where)
    url = _field(table, "url", str, where)
    size = _field(table, "size", int, where, default=None)
    sha256 = _field(table, "sha256", str, where, default=None)
    if not filename or Path(filename).name != filename or filename in (".", ".."):
        raise OptionError(f"{where}: filename must be a plain file name, not {filename!r}.")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise OptionError(f"{where}: url must start with http:// or https://, not {url!r}.")
    if size is not None and size <= 0:
        raise OptionError(f"{where}: size must be a positive number of bytes, not {size}.")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not _SHA256_RE.fullmatch(sha256):
            raise OptionError(f"{where}: sha256 must be 64 hexadecimal digits, not {sha256!r}.")
    return RemoteFile(filename, url, size, sha256)


def _parse_shape(table: Mapping[str, Any], where: str) -> ModelConfig:
    _reject_unknown_keys(table, {*SHAPE_FIELDS, "shared_classifier"}, where)
    values = {name: _field(table, name, int, where) for name in SHAPE_FIELDS}
    for name, value in values.items():
        if value <= 0:
            raise OptionError(f"{where}: {name} must be positive, not {value}.")
    if values["dim"] % values["n_heads"] or values["n_heads"] % values["n_kv_heads"]:
        raise OptionError(f"{where}: n_heads must divide dim and n_kv_heads must divide n_heads.")
    shared = _field(table, "shared_classifier", bool, where, default=True)
    return ModelConfig(**values, shared_classifier=shared)


def unknown_preset_message(name: str, presets: Mapping[str, Preset], models_dir: Path) -> str:
    if presets:
        width = max(len(p.name) for p in presets.values())
        files = max(len(p.checkpoint.filename) for p in presets.values())
        rows = [f"  {p.name:<{width}} {p.checkpoint.filename:<{files}} {p.description}" for p in presets.values()]
        known = f"The presets (from {models_dir.absolute()}) are:\n" + "\n".join(rows)
    else:
        known = f"There are no presets: {models_dir.absolute()} has no *.toml files."
    return (
        f"Unknown model '{name}'. {known}\n"
        "model= also accepts a GGUF file, a Hugging Face folder, or the path to a llama2.c checkpoint (.bin) "
        "together with its tokenizer, e.g. model=path/to/model.bin tokenizer=path/to/tokenizer.bin"
    )
