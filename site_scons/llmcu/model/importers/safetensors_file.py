"""Reading ``.safetensors`` files: an 8-byte little-endian header length, a JSON header naming every tensor's
dtype, shape and byte range, then the data (the format Hugging Face's ``safetensors`` package writes).

The header is parsed and checked here (every range inside the file, no overlap, sizes that match the shapes)
before any tensor is read, so a truncated or corrupt file is one clear error; tensors are read through a memory
map and converted to float32 (F32, F16 and BF16; numpy has no bfloat16, so BF16 is widened by hand).
"""

from __future__ import annotations

import itertools
import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .llama import ModelImportError

MAX_HEADER = 100 << 20  # the package's own limit on the JSON header
DTYPES = {"F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2), "BF16": (np.dtype("<u2"), 2)}
OTHER_DTYPES = {"F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "U32", "U64"}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offset in the file
    end: int


class SafetensorsFile:
    """One file's tensor index; :meth:`read` gives a tensor as float32."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = self.path.open("rb")
        except OSError as error:
            raise ModelImportError(f"cannot read {self.path}: {error.strerror or error}") from None
        size = self.path.stat().st_size
        head = self._file.read(8)
        if len(head) < 8:
            raise ModelImportError(f"{self.path}: {size} bytes, too short for a safetensors file (8-byte header)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or 8 + length > size:
            raise ModelImportError(
                f"{self.path}: header of {length:,} bytes does not fit in the file's {size:,} bytes "
                "(truncated, or not a safetensors file)"
            )
        try:
            header = json.loads(self._file.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelImportError(f"{self.path}: the header is not valid JSON ({error})") from None
        if not isinstance(header, dict):
            raise ModelImportError(f"{self.path}: the header is not a JSON object")
        self.metadata = header.pop("__metadata__", {}) or {}
        base = 8 + length
        self.tensors: dict[str, TensorInfo] = {}
        spans = []
        for name, entry in header.items():
            info = self._entry(name, entry, base, size)
            self.tensors[name] = info
            spans.append((info.start, info.end, name))
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            if start < end:
                raise ModelImportError(f"{self.path}: tensors {first} and {second} overlap")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def _entry(self, name: str, entry: object, base: int, size: int) -> TensorInfo:
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise ModelImportError(f"{self.path}: tensor {name!r} has no dtype, shape and data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise ModelImportError(f"{self.path}: tensor {name!r} has a bad shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)):
            raise ModelImportError(f"{self.path}: tensor {name!r} has bad data_offsets {offsets!r}")
        start, end = base + offsets[0], base + offsets[1]
        if not base <= start <= end <= size:
            raise ModelImportError(
                f"{self.path}: tensor {name!r} lies at bytes {start:,}..{end:,}, outside the file's {size:,} bytes "
                "(a truncated download?)"
            )
        if dtype in DTYPES:
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if end - start != count * DTYPES[dtype][1]:
                raise ModelImportError(
                    f"{self.path}: tensor {name!r} ({dtype} {shape}) needs {count * DTYPES[dtype][1]:,} bytes, "
                    f"its range has {end - start:,}"
                )
        elif dtype not in OTHER_DTYPES:
            raise ModelImportError(f"{self.path}: tensor {name!r} has unknown dtype {dtype!r}")
        return TensorInfo(dtype, tuple(shape), start, end)

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a float32 array of its shape."""
        info = self.tensors.get(name)
        if info is None:
            raise ModelImportError(f"{self.path}: no tensor {name!r}")
        if info.dtype not in DTYPES:
            raise ModelImportError(
                f"{self.path}: tensor {name!r} is {info.dtype}; llmcu reads F32, F16 and BF16 weights"
            )
        dtype, _ = DTYPES[info.dtype]
        assert self._map is not None or info.start == info.end
        raw = np.frombuffer(self._map, dtype=dtype, count=(info.end - info.start) // dtype.itemsize,
                            offset=info.start) if info.end > info.start else np.zeros(0, dtype)  # fmt: skip
        # BF16 is the upper half of a float32
        bf16 = info.dtype == "BF16"
        values = (raw.astype(np.uint32) << 16).view(np.float32) if bf16 else raw.astype(np.float32)
        return values.reshape(info.shape)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()
