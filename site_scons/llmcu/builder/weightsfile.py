"""The weights file (``model.bin``) of a ``weights_file=yes`` build: model_data.bin behind a 64-byte header.

Large models on Linux targets keep their weights out of the program: the program maps ``model.bin``
read-only at start (targets/posix/weights_file.c) and refuses a file that is not the one it was built with.
The header, all little-endian::

     0  magic "LLMCU-WF"          24  u64 data bytes
     8  u32 format version (1)    32  u32 CRC-32 of the data (zlib's crc32)
    12  u32 header bytes (64)     36  u32 reserved (0)
    16  u64 layout hash           40  char[20] label ("<model> <quant>", NUL-padded)
                                  60  u32 CRC-32 of bytes 0..59

The layout hash is FNV-1a 64 of a text that names the model's shape, its quantization and every array's
symbol, type, offset and size: two files with the same hash can be read by the same program. The program
carries the hash and the data size it was built for (model_config.h) and points each tensor at
``HEADER_BYTES + offset`` in the region the file is mapped over.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LlmcuError
from ..core.fileio import write_bytes_atomic

MAGIC = b"LLMCU-WF"
VERSION = 1
HEADER_BYTES = 64
LABEL_BYTES = 20
REGION_ALIGN = 65536  # the mapped region's alignment and size granule: every page size up to 64K
FILE_NAME = "model.bin"
_HEAD = struct.Struct("<8sIIQQII20s")  # bytes 0..59; the header's own CRC follows

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


class WeightsFileError(LlmcuError):
    """A weights file that is not one, or is damaged."""


def fnv1a64(data: bytes) -> int:
    value = FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value


@dataclass(frozen=True)
class WeightsFileLayout:
    """What a program built for a weights file knows about it."""

    layout_hash: int
    data_bytes: int
    label: str
    version: int = VERSION
    header_bytes: int = HEADER_BYTES

    @property
    def region_bytes(self) -> int:
        """Bytes the program reserves for the mapping: header and data, rounded up to 64K."""
        return -(-(self.header_bytes + self.data_bytes) // REGION_ALIGN) * REGION_ALIGN

    def offset(self, blob_offset: int) -> int:
        """Where an array that is at ``blob_offset`` in model_data.bin is in the mapped file."""
        return self.header_bytes + blob_offset


def layout_text(config: Any, plan: Any, blobs: Iterable[Any], weight_layout: str = "rowmajor") -> str:
    """The text the layout hash is taken of (``config``: ModelConfig, ``plan``: QuantPlan, ``blobs``: codegen
    Blobs with their offsets assigned, ``weight_layout``: the kernel set's arrangement of the quantized matrices,
    llmcu.builder.layouts). The arrangement is in it because two layouts can have equal sizes and offsets: a program
    built with kernels=opt must refuse the file a kernels=ref build wrote, or it would read the wrong weights."""
    kinds = ("tok_embeddings", "wq", "wk", "wv", "wo", "w1", "w2", "w3", "wcls")
    lines = [
        f"llmcu weights file {VERSION}",
        f"dim={config.dim} hidden_dim={config.hidden_dim} n_layers={config.n_layers} n_heads={config.n_heads} "
        f"n_kv_heads={config.n_kv_heads} vocab_size={config.vocab_size} shared={int(config.shared_classifier)}",
        f"group_size={plan.group_size} " + " ".join(f"{kind}={plan.qtype(kind)}" for kind in kinds),
        f"matrix_layout={weight_layout}",
    ]
    lines += [f"{blob.symbol} {blob.ctype} {blob.offset} {blob.size}" for blob in blobs]
    return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    """ASCII that fits the header's 20 bytes and a C string literal."""
    return re.sub(r"[^A-Za-z0-9_.+= -]", "_", text)[:LABEL_BYTES]


def describe(
    config: Any, plan: Any, blobs: list[Any], data_bytes: int, label: str, weight_layout: str = "rowmajor"
) -> WeightsFileLayout:
    layout_hash = fnv1a64(layout_text(config, plan, blobs, weight_layout).encode())
    return WeightsFileLayout(layout_hash, data_bytes, _label(label))


def header(layout: WeightsFileLayout, data: bytes) -> bytes:
    if len(data) != layout.data_bytes:
        raise ValueError(f"data is {len(data)} bytes, the layout says {layout.data_bytes}")
    head = _HEAD.pack(
        MAGIC, VERSION, HEADER_BYTES, layout.layout_hash, len(data), zlib.crc32(data), 0, layout.label.encode()
    )
    return head + struct.pack("<I", zlib.crc32(head))


def write_weights_file(path: str | Path, layout: WeightsFileLayout, data: bytes) -> None:
    """Header and data, written atomically."""
    write_bytes_atomic(path, header(layout, data) + data)


@dataclass(frozen=True)
class HeaderInfo:
    version: int
    header_bytes: int
    layout_hash: int
    data_bytes: int
    data_crc: int
    label: str


def read_header(path: str | Path) -> HeaderInfo:
    """The header of a weights file, checked for its magic and its own checksum (not the data's)."""
    with Path(path).open("rb") as handle:
        raw = handle.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES or raw[:8] != MAGIC:
        raise WeightsFileError(f"{path} is not an llmcu weights file")
    if zlib.crc32(raw[:60]) != struct.unpack_from("<I", raw, 60)[0]:
        raise WeightsFileError(f"{path}: the header's checksum does not match")
    _magic, version, header_bytes, layout_hash, data_bytes, data_crc, _reserved, label = _HEAD.unpack_from(raw)
    try:  # the writer puts ASCII there (_label); anything else is a damaged or foreign header with a lucky CRC
        text = label.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise WeightsFileError(f"{path}: the header's label is not ASCII: {label!r}") from None
    return HeaderInfo(version, header_bytes, layout_hash, data_bytes, data_crc, text)
