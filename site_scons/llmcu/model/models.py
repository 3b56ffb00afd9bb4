"""Model presets (``models/*.toml``) and finding, verifying and downloading the files they name.

Each file a model needs is looked for, in this order:

1. in every directory of ``LLMCU_MODELS`` (separated by ``os.pathsep``; relative to the working directory),
   where a file whose size differs from the preset's is an error, not a silent fallback;
2. in the user cache (``LLMCU_CACHE``, else ``$XDG_CACHE_HOME/llmcu``, else ``~/.cache/llmcu``), where the
   size and sha256 are checked (the hash once: a ``<file>.sha256`` stamp remembers it);
3. downloaded into the cache, unless ``LLMCU_OFFLINE=1``. A download streams into ``<file>.part``, resumes an
   interrupted one with an HTTP Range request, and is renamed into place only once verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from .. import __version__
from ..core.config import ModelConfig
from ..core.errors import CheckpointError, DownloadError, ModelNotFoundError, OptionError
from ..core.fileio import locked_directory, read_toml, write_text_atomic

ENV_MODELS = "LLMCU_MODELS"
ENV_CACHE = "LLMCU_CACHE"
ENV_OFFLINE = "LLMCU_OFFLINE"
DEFAULT_TIMEOUT = 30.0
DEFAULT_ATTEMPTS = 3
CHUNK_SIZE = 1 << 20
SHAPE_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")

_REQUIRED = object()
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_FILE_KEYS = {"filename": str, "url": str, "size": int, "sha256": str}
_TOP_KEYS = {"name", "description", "checkpoint", "tokenizer", "shape"}


# --------------------------------------------------------------------------------------------------- types


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


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are. ``name`` names its build directories; ``preset`` is None for a path."""

    name: str
    checkpoint: Path
    tokenizer: Path
    preset: Preset | None


@dataclass(frozen=True)
class _Lookup:
    search_dirs: tuple[Path, ...]
    cache_dir: Path
    download: bool
    progress: bool


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class _TransferError(Exception):
    """A download did not complete (network trouble, not a checksum): retryable if it made progress."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# ------------------------------------------------------------------------------------------------ presets


def list_presets(models_dir: str | os.PathLike[str]) -> dict[str, Preset]:
    """Every preset in ``models_dir``, smallest model first."""
    presets = [_parse_preset(path) for path in sorted(Path(models_dir).glob("*.toml"))]
    presets.sort(key=lambda preset: (preset.shape.parameter_count(), preset.name))
    return {preset.name: preset for preset in presets}


def load_preset(name: str, models_dir: str | os.PathLike[str]) -> Preset:
    """The preset called ``name`` (case-insensitive); :class:`OptionError` listing the known ones if none."""
    presets = list_presets(models_dir)
    preset = _find_preset(name, presets)
    if preset is None:
        raise OptionError(_unknown_preset_message(name, presets, Path(models_dir)))
    return preset


def _find_preset(name: str, presets: Mapping[str, Preset]) -> Preset | None:
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


def _unknown_preset_message(name: str, presets: Mapping[str, Preset], models_dir: Path) -> str:
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


# ------------------------------------------------------------------------------------------- environment


def models_search_dirs() -> list[Path]:
    """The directories of ``LLMCU_MODELS``, made absolute against the current working directory."""
    value = os.environ.get(ENV_MODELS, "")
    return [Path(part).expanduser().absolute() for part in value.split(os.pathsep) if part.strip()]


def default_cache_dir() -> Path:
    """``LLMCU_CACHE``, else ``$XDG_CACHE_HOME/llmcu``, else ``~/.cache/llmcu``."""
    override = os.environ.get(ENV_CACHE, "").strip()
    if override:
        return Path(override).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "llmcu"


def offline() -> bool:
    """True when ``LLMCU_OFFLINE`` is set to 1/true/yes/on: never download."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def _make_lookup(
    search_dirs: Sequence[str | os.PathLike[str]] | None,
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    progress: bool,
) -> _Lookup:
    dirs = models_search_dirs() if search_dirs is None else [Path(d).expanduser().absolute() for d in search_dirs]
    cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser().absolute()
    return _Lookup(tuple(dirs), cache, download and not offline(), progress)


def _warn(message: str) -> None:
    print(f"llmcu: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's content, as lowercase hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_file`, remembered in a ``<file>.sha256`` stamp keyed by the file's size and mtime."""
    target = Path(path)
    sha = _stamped_sha256(target)
    if sha is None:
        sha = sha256_file(target)
        _write_stamp(target, sha)
    return sha


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamped_sha256(path: Path) -> str | None:
    try:
        sha, size, mtime_ns = _stamp_path(path).read_text(encoding="ascii").split()
        stat = path.stat()
        fresh = int(size) == stat.st_size and int(mtime_ns) == stat.st_mtime_ns
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return sha if fresh and _SHA256_RE.fullmatch(sha) else None


def _write_stamp(path: Path, sha: str) -> None:
    stat = path.stat()
    with contextlib.suppress(OSError):  # a read-only directory only costs hashing the file again next time
        write_text_atomic(_stamp_path(path), f"{sha} {stat.st_size} {stat.st_mtime_ns}\n")


# ------------------------------------------------------------------------------------------- resolution


def resolve_model(
    model: str | Preset,
    tokenizer: str | os.PathLike[str] | None,
    models_dir: str | os.PathLike[str],
    *,
    search_dirs: Sequence[str | os.PathLike[str]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
) -> ResolvedModel:
    """Find (or download) a model's checkpoint and tokenizer.

    ``model`` is a preset name from ``models_dir``, a :class:`Preset`, the path to a GGUF file or a Hugging Face
    folder (their vocabulary comes with them), or the path to a llama2.c checkpoint; a checkpoint needs ``tokenizer``
    too (a path, or a tokenizer file name a preset knows, such as
    ``tokenizer.bin``). With a preset, ``tokenizer`` (if given) replaces the preset's tokenizer.
    ``search_dirs`` and ``cache_dir`` default to ``LLMCU_MODELS`` and :func:`default_cache_dir`.
    """
    lookup = _make_lookup(search_dirs, cache_dir, download, progress)
    presets = list_presets(models_dir)
    preset = model if isinstance(model, Preset) else _find_preset(model, presets)
    if preset is None and not _looks_like_path(str(model)):
        raise OptionError(_unknown_preset_message(str(model), presets, Path(models_dir)))
    known = [*presets.values(), *([preset] if preset is not None else [])]
    tokenizers = {p.tokenizer.filename: p.tokenizer for p in known if p.tokenizer is not None}
    if preset is not None:
        return _resolve_preset(preset, tokenizer, tokenizers, lookup)
    return _resolve_path_model(str(model), tokenizer, presets, lookup)


def _looks_like_path(value: str) -> bool:
    path = Path(value)
    return "/" in value or os.sep in value or path.suffix != "" or path.exists()


def _resolve_preset(
    preset: Preset,
    tokenizer: str | os.PathLike[str] | None,
    tokenizers: Mapping[str, RemoteFile],
    lookup: _Lookup,
) -> ResolvedModel:
    checkpoint = _resolve_remote(preset.checkpoint, f"the checkpoint of preset '{preset.name}'", lookup)
    if tokenizer is not None:
        tokenizer_path = _resolve_named(str(tokenizer), "tokenizer", tokenizers, lookup)
    elif preset.tokenizer is not None:
        tokenizer_path = _resolve_remote(preset.tokenizer, f"the tokenizer of preset '{preset.name}'", lookup)
    else:
        tokenizer_path = checkpoint  # the GGUF file's own vocabulary
    return ResolvedModel(preset.name, checkpoint, tokenizer_path, preset)


def _resolve_path_model(
    model: str, tokenizer: str | os.PathLike[str] | None, presets: Mapping[str, Preset], lookup: _Lookup
) -> ResolvedModel:
    from .importers import is_gguf, is_hf_folder

    path = Path(model).expanduser()
    if is_hf_folder(path) or is_gguf(path):  # the vocabulary is in the GGUF file, or the folder's tokenizer.model
        found = path.absolute()
        if tokenizer is None and path.is_dir() and not (path / "tokenizer.model").is_file():
            raise OptionError(f"model={model}: the folder has no tokenizer.model; give tokenizer=PATH")
        tokenizer_path = found if tokenizer is None else _resolve_named(str(tokenizer), "tokenizer", {}, lookup)
        return ResolvedModel(build_name(path.stem if path.is_file() else path.name), found, tokenizer_path, None)
    if path.is_dir():
        raise OptionError(
            f"model={model} is a folder without config.json: llmcu reads Hugging Face Llama folders "
            "(config.json, model.safetensors, tokenizer.model), GGUF files and llama2.c checkpoints"
        )
    if tokenizer is None:
        raise OptionError(_tokenizer_needed_message(model, presets))
    checkpoints = {p.checkpoint.filename: p.checkpoint for p in presets.values()}
    tokenizers = {p.tokenizer.filename: p.tokenizer for p in presets.values() if p.tokenizer is not None}
    checkpoint = _resolve_named(model, "checkpoint", checkpoints, lookup)
    tokenizer_path = _resolve_named(str(tokenizer), "tokenizer", tokenizers, lookup)
    return ResolvedModel(build_name(Path(model).stem), checkpoint, tokenizer_path, None)


def build_name(stem: str) -> str:
    """A file stem made safe as a build directory name (letters, digits, ``. _ -``; no leading dot)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "model"


def _tokenizer_needed_message(model: str, presets: Mapping[str, Preset]) -> str:
    users: dict[str, list[str]] = {}
    for preset in presets.values():
        if preset.tokenizer is not None:
            users.setdefault(preset.tokenizer.filename, []).append(preset.name)
    names = ", ".join(f"{name} (as in {', '.join(who)})" for name, who in users.items())
    known = f" A tokenizer a preset uses can be given by file name, and llmcu finds or downloads it: {names}."
    return (
        f"model={model} is a checkpoint file, so llmcu also needs its tokenizer: add "
        f"tokenizer=path/to/tokenizer.bin.{known if users else ''}"
    )


def _resolve_named(value: str, kind: str, known: Mapping[str, RemoteFile], lookup: _Lookup) -> Path:
    """A user-given file: a path that exists, else a bare file name looked up like a preset's files."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.absolute()
    bare = "/" not in value and os.sep not in value
    if bare and value in known:
        return _resolve_remote(known[value], f"the {kind} {value}", lookup)
    candidates = [path.absolute()]
    if bare:
        candidates += [directory / value for directory in (*lookup.search_dirs, lookup.cache_dir)]
        for candidate in candidates[1:]:
            if candidate.is_file():
                return candidate
    listing = "\n".join(f"  {candidate}" for candidate in candidates)
    raise ModelNotFoundError(
        f"The {kind} file {value} does not exist. Looked for:\n{listing}\n"
        f"Give the path to an existing {kind} file, or put it in a directory named by {ENV_MODELS}."
    )


def resolve_file(
    remote: RemoteFile,
    *,
    search_dirs: Sequence[str | os.PathLike[str]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
    what: str | None = None,
) -> Path:
    """Find ``remote`` in ``LLMCU_MODELS``, then the cache, else download it into the cache (module doc)."""
    lookup = _make_lookup(search_dirs, cache_dir, download, progress)
    return _resolve_remote(remote, what or remote.filename, lookup)


def _resolve_remote(remote: RemoteFile, what: str, lookup: _Lookup) -> Path:
    for directory in lookup.search_dirs:
        found = _check_search_dir_file(directory / remote.filename, remote)
        if found is not None:
            return found
    cached = _check_cache_file(lookup.cache_dir / remote.filename, remote, lookup.download)
    if cached is not None:
        return cached
    if not lookup.download:
        reason = "Downloading is off"
        reason += f": unset {ENV_OFFLINE} to let llmcu download it." if offline() else "."
        raise ModelNotFoundError(_not_found_message(remote, what, lookup, reason))
    try:
        return _download(remote, lookup.cache_dir, lookup.progress, DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS)
    except _TransferError as err:
        raise ModelNotFoundError(_not_found_message(remote, what, lookup, f"Downloading failed: {err}")) from err


def _check_search_dir_file(path: Path, remote: RemoteFile) -> Path | None:
    if not path.is_file():
        return None
    problem = _size_problem(path, remote)
    if problem is not None:
        raise ModelNotFoundError(
            f"{problem}, so it is not the file {remote.describe()}. It was found through {ENV_MODELS}: "
            "replace it with the right file or remove it from there (llmcu does not skip a wrong file)."
        )
    return path


def _check_cache_file(path: Path, remote: RemoteFile, can_download: bool) -> Path | None:
    if not path.is_file():
        return None
    problem = _cache_problem(path, remote)
    if problem is None:
        return path
    if can_download:
        _warn(f"{problem}; downloading it again.")
        return None
    raise DownloadError(
        f"{problem}: the cached file is damaged or outdated. Delete it, or allow downloading (unset "
        f"{ENV_OFFLINE}) to replace it, or put the right file ({remote.describe()}) there."
    )


def _cache_problem(path: Path, remote: RemoteFile) -> str | None:
    """Why the cached file ``path`` is not ``remote`` (size first, then the stamped or computed sha256), or None."""
    return _size_problem(path, remote) or _hash_problem(path, remote)


def _size_problem(path: Path, remote: RemoteFile) -> str | None:
    actual = path.stat().st_size
    if remote.size is None or actual == remote.size:
        return None
    return f"{path} has {actual} bytes, expected {remote.size}"


def _hash_problem(path: Path, remote: RemoteFile) -> str | None:
    if remote.sha256 is None:
        return None
    actual = cached_sha256(path)
    return None if actual == remote.sha256 else f"{path} has sha256 {actual}, expected {remote.sha256}"


def _not_found_message(remote: RemoteFile, what: str, lookup: _Lookup, reason: str) -> str:
    places = [
        f"  {d / remote.filename}  ({ENV_MODELS}{'' if d.is_dir() else '; no such directory'})"
        for d in lookup.search_dirs
    ] or [f"  (no directories: {ENV_MODELS} is not set)"]
    places.append(f"  {lookup.cache_dir / remote.filename}  (llmcu cache)")
    return "\n".join(
        [
            f"Cannot find {what} ({remote.filename}). Looked in:",
            *places,
            reason,
            "To fix it, download the file yourself:",
            f"  {remote.describe()}",
            f"and put it in the cache directory {lookup.cache_dir}, or in a directory of your own named in "
            f"{ENV_MODELS} (e.g. {ENV_MODELS}=/path/to/models; separate several with '{os.pathsep}').",
        ]
    )


# -------------------------------------------------------------------------------------------- download


def download_file(
    remote: RemoteFile,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Path:
    """Download ``remote`` into ``cache_dir`` and verify it; :class:`DownloadError` if that fails.

    Streams into ``<file>.part`` and resumes one left by an interrupted download; a failed attempt that
    made progress is retried, up to ``attempts`` in all. Only a verified file gets the final name.
    """
    cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser().absolute()
    try:
        return _download(remote, cache, progress, timeout, attempts)
    except _TransferError as err:
        raise DownloadError(str(err)) from err


def _download(remote: RemoteFile, cache: Path, progress: bool, timeout: float, attempts: int) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / remote.filename
    part = final.with_name(final.name + ".part")

    def waiting() -> None:
        _warn(f"another llmcu process is downloading into {cache}; waiting for it to finish")

    # One download into the cache at a time: two builds fetching the same model would append to one .part.
    with locked_directory(cache, on_wait=waiting):
        if final.is_file() and _cache_problem(final, remote) is None:
            return final  # the process we waited for fetched it
        sha = _fetch_with_retries(remote, part, progress, timeout, attempts)
        _verify_download(part, remote, sha)
        os.replace(part, final)
        _write_stamp(final, sha)
    return final


def _fetch_with_retries(remote: RemoteFile, part: Path, progress: bool, timeout: float, attempts: int) -> str:
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            return _fetch(remote, part, progress, timeout)
        except _TransferError as err:
            if not err.retryable or attempt >= attempts:
                kept = f" The partial download is kept in {part}; the next try resumes it." if part.exists() else ""
                raise _TransferError(f"{err}.{kept}", retryable=err.retryable) from err
            _warn(f"{err}; retrying ({attempt + 1} of {attempts}).")
    raise AssertionError("unreachable")


def _fetch(remote: RemoteFile, part: Path, progress: bool, timeout: float) -> str:
    """Stream ``remote`` into ``part`` (appending if the server honours the Range request); its sha256."""
    offset = _resumable_offset(part, remote)
    with _open(remote.url, offset, timeout, part) as response:
        offset = _agreed_offset(response, offset, part)
        digest = _hash_prefix(part, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else remote.size
        bar = _progress_bar(remote, total, offset, progress)
        received = _stream(response, part, offset, digest, bar)
    if total is not None and received < total:
        raise _TransferError(
            f"the download of {remote.url} stopped after {received} of {total} bytes",
            retryable=received > offset,
        )
    return digest.hexdigest()


def _resumable_offset(part: Path, remote: RemoteFile) -> int:
    size = part.stat().st_size if part.is_file() else 0
    if size and (remote.size is None or size < remote.size):
        return size
    part.unlink(missing_ok=True)
    return 0


def _open(url: str, offset: int, timeout: float, part: Path) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"llmcu/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # the partial file does not fit what the server has: start again
            part.unlink(missing_ok=True)
            raise _TransferError(f"{url} refused to resume the download (HTTP 416)", retryable=True) from err
        raise _TransferError(f"{url} answered HTTP {err.code} {err.reason}", retryable=False) from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise _TransferError(f"cannot reach {url} ({reason})", retryable=False) from err


def _agreed_offset(response: http.client.HTTPResponse, offset: int, part: Path) -> int:
    """The offset the server resumes at: ours on a matching 206, else 0 (a full response: start again)."""
    if offset and response.status == 206:
        if response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            return offset
        part.unlink(missing_ok=True)
        raise _TransferError(f"{response.geturl()} resumed at the wrong place", retryable=True)
    return 0


def _hash_prefix(part: Path, offset: int) -> _Digest:
    digest = hashlib.sha256()
    if offset:
        with part.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                digest.update(chunk)
    return digest


def _progress_bar(remote: RemoteFile, total: int | None, offset: int, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading {remote.filename}",
        disable=not (progress and sys.stderr.isatty()),
    )


def _stream(response: http.client.HTTPResponse, part: Path, offset: int, digest: _Digest, bar: tqdm) -> int:
    received = offset
    with part.open("ab" if offset else "wb") as out, bar:
        try:
            # read1: what has arrived, up to a chunk. read() would wait for a whole chunk, and a connection that
            # stalls or drops inside it would lose the bytes it had already received (up to a megabyte per try)
            while chunk := response.read1(CHUNK_SIZE):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise _TransferError(
                f"the download of {response.geturl()} broke off after {received} bytes ({err})",
                retryable=received > offset,
            ) from err
        finally:
            out.flush()
            os.fsync(out.fileno())
    return received


def _verify_download(part: Path, remote: RemoteFile, sha: str) -> None:
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise DownloadError(
            f"{remote.url} sent {size} bytes, expected {remote.size}; the download was deleted. If the file "
            "on the server has changed, update the preset (or download it yourself and set LLMCU_MODELS)."
        )
    if remote.sha256 is None:
        _warn(f"{remote.filename} cannot be verified: its preset records no sha256 (the download has {sha}).")
    elif sha != remote.sha256:
        part.unlink()
        raise DownloadError(
            f"{remote.url} does not have the expected content: sha256 {sha}, expected {remote.sha256}; "
            "the download was deleted. If the file on the server has changed, update the preset "
            f"(or download it yourself and set {ENV_MODELS})."
        )
