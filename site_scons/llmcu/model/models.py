"""Finding a model's files: a preset's (llmcu.model.presets), or a checkpoint path, verified, downloaded when
missing (llmcu.model.download).

Each file a model needs is looked for, in this order:

1. in every directory of ``LLMCU_MODELS`` (separated by ``os.pathsep``; relative to the working directory),
   where a file whose size differs from the preset's is an error, not a silent fallback;
2. in the user cache (``LLMCU_CACHE``, else ``$XDG_CACHE_HOME/llmcu``, else ``~/.cache/llmcu``), where the
   size and sha256 are checked (the hash once: a ``<file>.sha256`` stamp remembers it);
3. downloaded into the cache, unless ``LLMCU_OFFLINE=1``. A download streams into ``<file>.part``, resumes an
   interrupted one with an HTTP Range request, and is renamed into place only once verified.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DownloadError, ModelNotFoundError, OptionError
from .download import TransferError, cache_problem, default_cache_dir, fetch_into_cache, size_problem, warn
from .presets import Preset, RemoteFile, find_preset, list_presets, unknown_preset_message

ENV_MODELS = "LLMCU_MODELS"
ENV_OFFLINE = "LLMCU_OFFLINE"


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


def models_search_dirs() -> list[Path]:
    """The directories of ``LLMCU_MODELS``, made absolute against the current working directory."""
    value = os.environ.get(ENV_MODELS, "")
    return [Path(part).expanduser().absolute() for part in value.split(os.pathsep) if part.strip()]


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
    preset = model if isinstance(model, Preset) else find_preset(model, presets)
    if preset is None and not _looks_like_path(str(model)):
        raise OptionError(unknown_preset_message(str(model), presets, Path(models_dir)))
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
        return fetch_into_cache(remote, lookup.cache_dir, lookup.progress)
    except TransferError as err:
        raise ModelNotFoundError(_not_found_message(remote, what, lookup, f"Downloading failed: {err}")) from err


def _check_search_dir_file(path: Path, remote: RemoteFile) -> Path | None:
    if not path.is_file():
        return None
    problem = size_problem(path, remote)
    if problem is not None:
        raise ModelNotFoundError(
            f"{problem}, so it is not the file {remote.describe()}. It was found through {ENV_MODELS}: "
            "replace it with the right file or remove it from there (llmcu does not skip a wrong file)."
        )
    return path


def _check_cache_file(path: Path, remote: RemoteFile, can_download: bool) -> Path | None:
    if not path.is_file():
        return None
    problem = cache_problem(path, remote)
    if problem is None:
        return path
    if can_download:
        warn(f"{problem}; downloading it again.")
        return None
    raise DownloadError(
        f"{problem}: the cached file is damaged or outdated. Delete it, or allow downloading (unset "
        f"{ENV_OFFLINE}) to replace it, or put the right file ({remote.describe()}) there."
    )


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
