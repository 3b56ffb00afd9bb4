"""A disk cache of fitted weights, so that calibration and GPTQ run once per model, plan and fitting code.

Every build of a quantized model (and the Python reference a test compares it with) quantizes the same
checkpoint the same way; with calibration and GPTQ that is 0.5 s for stories260K and ~15 s for stories15M, each
time. The result depends only on the model's tensors, the plan (types, group size, fit, calibration source)
and the code that fits, so it is kept under the user cache (``LLMCU_CACHE``, else ``~/.cache/llmcu``) in
``quantized/<key>.npz``, the key a hash of all three. A file that cannot be read is ignored and rewritten;
files are written atomically. A plan calibrated on a text file is not cached (its tokens depend on the
tokenizer too). The key also holds numpy's version (its elementwise functions are part of the arithmetic; what
does not depend on the CPU does not depend on a cache hit either). ``LLMCU_QUANT_CACHE=0`` turns the cache off;
``LLMCU_QUANT_CACHE_DIR`` puts it elsewhere (the test suite keeps its own).

Beside the fitted weights it keeps what a build measures of the model with the same arithmetic and the same rules
(``measurement_key``): the q16 KV cache's calibrated ranges (1.4 s for stories260K) and the quality against fp32
(1.6 s), which every quantized build of a model would otherwise compute again.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import LlmcuError
from ..core.fileio import write_bytes_atomic
from .download import default_cache_dir

ENV_SWITCH = "LLMCU_QUANT_CACHE"
ENV_FOLDER = "LLMCU_QUANT_CACHE_DIR"
FOLDER = "quantized"
# The modules whose code decides the fitted values: a change to any of them is a new key.
FITTING_CODE = ("quantize.py", "fitting.py", "calibration.py", "portable.py")
# One matrix kind: (qtype, group_size, q, scales or None, zeros or None), llmcu.model.quantize.QuantizedMatrix's fields.
Fields = tuple[str, int, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


# The modules whose code decides a measurement (measurement_key): the forward passes, the calibration stories, the
# sampler and tokenizer of the evaluation text, the quality figures.
MEASURING_CODE = (*FITTING_CODE, "reference.py", "kvq16.py", "quality.py", "oracle.py", "sampler.py", "tokenizer.py")


def switched_on() -> bool:
    """``LLMCU_QUANT_CACHE=0`` switches the cache off."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def enabled(calibration_source: str) -> bool:
    """Whether a plan calibrated on ``calibration_source`` is cached (not for text files; not when switched off)."""
    return switched_on() and calibration_source in ("sampled", "none")


def cache_key(weights_digest: str, plan_fields: tuple) -> str:
    """The key of a model (its tensors' digest) quantized by a plan (its fields) with today's fitting code."""
    digest = hashlib.sha256(weights_digest.encode())
    digest.update(repr(plan_fields).encode())
    return _with_code(digest, FITTING_CODE)


def measurement_key(kind: str, *inputs: str) -> str:
    """The key of a measurement ``kind`` of ``inputs`` (digests of what it reads) with today's measuring code."""
    digest = hashlib.sha256(kind.encode())
    for part in inputs:
        digest.update(b"\0" + part.encode())
    return f"{kind}-{_with_code(digest, MEASURING_CODE)}"


def _with_code(digest: Any, code: tuple[str, ...]) -> str:
    """``digest`` finished with numpy's version and the source of the ``code`` modules: a key's first 32 hex digits."""
    digest.update(f"numpy {np.__version__}".encode())
    here = Path(__file__).resolve().parent
    for name in code:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:32]


def array_digest(*arrays: np.ndarray | None) -> str:
    """A hash of arrays' shapes, types and bytes (None counts too)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()


def load_arrays(key: str) -> dict[str, np.ndarray] | None:
    """A measurement's arrays, or None when there is no usable file (or the cache is off)."""
    return _read(cache_path(key)) if switched_on() else None


def store_arrays(key: str, arrays: dict[str, np.ndarray]) -> None:
    """Keep a measurement's arrays; a cache that cannot be written (or is off) is only not used."""
    if switched_on():
        _write(cache_path(key), arrays)


def cache_path(key: str) -> Path:
    override = os.environ.get(ENV_FOLDER, "").strip()
    folder = Path(override).expanduser().absolute() if override else default_cache_dir() / FOLDER
    return folder / f"{key}.npz"


def load(path: Path) -> dict[str, Fields] | None:
    """The cached matrices' fields, or None when there is no usable file."""
    archive = _read(path)
    if archive is None:
        return None
    try:
        return {
            str(kind): (str(archive[f"{kind}.qtype"]), int(archive[f"{kind}.group_size"]), archive[f"{kind}.q"],
                        archive.get(f"{kind}.scales"), archive.get(f"{kind}.zeros"))
            for kind in archive["kinds"]
        }  # fmt: skip
    except (KeyError, ValueError):
        return None


def store(path: Path, matrices: dict[str, Fields]) -> None:
    """Write the matrices' fields; a cache that cannot be written (full or read-only disk) is only not used."""
    arrays: dict[str, np.ndarray] = {"kinds": np.array(list(matrices))}
    for kind, (qtype, group_size, q, scales, zeros) in matrices.items():
        arrays[f"{kind}.qtype"] = np.array(qtype)
        arrays[f"{kind}.group_size"] = np.array(group_size)
        arrays[f"{kind}.q"] = q
        if scales is not None:
            arrays[f"{kind}.scales"] = scales
        if zeros is not None:
            arrays[f"{kind}.zeros"] = zeros
    _write(path, arrays)


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of an ``.npz`` file, or None when it is missing or cannot be read (it is then written again)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` file atomically; a cache that cannot be written (full or read-only disk) is only not used."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buffer.getvalue())
    except (OSError, LlmcuError):
        pass
