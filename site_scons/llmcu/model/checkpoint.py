"""Read, validate and write llama2.c checkpoints: legacy v0 and v1 (fp32), and v2 (Q8_0, as runq.c reads it).

All three formats are little-endian. The reader checks the header and then the exact file size a header of
that shape implies *before* reading any weight, so a corrupt or hostile header can never make it allocate
more than the file itself. Sizes are computed with Python ints, which cannot overflow.

Layouts (``n`` = n_layers; per-layer tensors stacked along a leading layer axis):

* v0: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
  means an unshared classifier), fp32 tensors in :meth:`ModelConfig.tensor_shapes` order, two RoPE tables
  (freq_cis_real, freq_cis_imag, each ``seq_len * head_size / 2`` floats; skipped), then wcls if unshared.
* v1: a 256-byte header (uint32 magic ``0x616b3432``, int32 version 1, the 7 int32 params, uint8
  shared_classifier, zero padding), fp32 norms (rms_att, rms_ffn, rms_final), then tok_embeddings, wq, wk,
  wv, wo, w1, w2, w3 and wcls if unshared.
* v2: the v1 header with version 2 and an int32 group_size straight after the shared_classifier byte; fp32
  norms as in v1; then every matrix (tok_embeddings, each layer of wq, each layer of wk, ..., w3, wcls if
  unshared) as int8 values followed by one fp32 scale per group of ``group_size`` values of the flattened
  matrix.

``llmcu-checkpoint`` (llmcu.cli.checkpoint) is the command line: ``info`` and ``random``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import LAYER_MATRICES, MATRIX_KINDS, NORM_NAMES, ModelConfig
from ..core.errors import CheckpointError
from ..core.fileio import write_bytes_atomic


@dataclass
class Checkpoint:
    """A model as float32 tensors, whatever format it came from, so later steps handle one representation.

    ``source_group_size`` is the Q8_0 group size of a v2 source (its weights are already dequantized).
    """

    config: ModelConfig
    weights: dict[str, np.ndarray]  # float32, shapes from ModelConfig.tensor_shapes()
    format: str = "v0"
    path: Path | None = None
    source_group_size: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


MAGIC = 0x616B3432  # b"24ka" on disk
FORMATS = ("v0", "v1", "v2")
V0_HEADER_BYTES = 28
V1_HEADER_BYTES = 256
HEADER_BYTES = V1_HEADER_BYTES  # enough to parse any header

# Bounds on header values. Far above any model that fits a microcontroller, but low enough that a header
# of random bytes (a text file, a different format) is rejected as such rather than as "truncated".
MAX_DIM = 1 << 20
MAX_VOCAB = 1 << 22
MAX_LAYERS = 1024
MAX_SEQ_LEN = 1 << 20
_LIMITS = {
    "dim": MAX_DIM,
    "hidden_dim": MAX_DIM,
    "n_layers": MAX_LAYERS,
    "n_heads": MAX_DIM,
    "n_kv_heads": MAX_DIM,
    "vocab_size": MAX_VOCAB,
    "seq_len": MAX_SEQ_LEN,
}
PARAM_NAMES = tuple(_LIMITS)
ROPE_TABLES = ("freq_cis_real", "freq_cis_imag")  # v0 only; written, never read
_NOT_A_CHECKPOINT = "a corrupt header, or not a llama2.c checkpoint"

PRESETS: dict[str, ModelConfig] = {
    "260k": ModelConfig(64, 172, 5, 8, 4, 512, 512, True),
    "15m": ModelConfig(288, 768, 6, 6, 6, 32000, 256, True),
}

_F32 = np.dtype("<f4")
_I8 = np.dtype("i1")
_V0_HEADER = struct.Struct("<7i")
_V1_HEADER = struct.Struct("<Ii7iB")  # magic, version, params, shared_classifier
_V2_GROUP = struct.Struct("<i")  # right after the shared_classifier byte, unaligned
_MAGIC_VERSION = struct.Struct("<Ii")
_Q8_MAX = 127


# --- layouts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """One contiguous run of a file: a whole tensor, one layer of a stacked tensor, or a skipped table."""

    name: str
    numel: int
    layer: int | None = None
    quantized: bool = False
    skipped: bool = False


@dataclass(frozen=True)
class _Layout:
    """Where every value of a checkpoint lives; the single description both reader and writer follow."""

    format: str
    config: ModelConfig
    header_bytes: int
    group_size: int | None
    segments: tuple[_Segment, ...]

    def segment_bytes(self, segment: _Segment) -> int:
        if not segment.quantized:
            return segment.numel * _F32.itemsize
        assert self.group_size is not None
        return segment.numel * _I8.itemsize + (segment.numel // self.group_size) * _F32.itemsize

    def total_bytes(self) -> int:
        return self.header_bytes + sum(self.segment_bytes(s) for s in self.segments)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _layout_v0(config: ModelConfig) -> _Layout:
    shapes = config.tensor_shapes()
    segments = [_Segment(name, _numel(shape)) for name, shape in shapes.items() if name != "wcls"]
    table = config.seq_len * config.head_size // 2
    segments += [_Segment(name, table, skipped=True) for name in ROPE_TABLES]
    if "wcls" in shapes:
        segments.append(_Segment("wcls", _numel(shapes["wcls"])))
    return _Layout("v0", config, V0_HEADER_BYTES, None, tuple(segments))


def _layout_v1(config: ModelConfig) -> _Layout:
    shapes = config.tensor_shapes()
    order = [*NORM_NAMES, *(name for name in MATRIX_KINDS if name in shapes)]
    segments = tuple(_Segment(name, _numel(shapes[name])) for name in order)
    return _Layout("v1", config, V1_HEADER_BYTES, None, segments)


def _layout_v2(config: ModelConfig, group_size: int) -> _Layout:
    shapes = config.tensor_shapes()
    segments = [_Segment(name, _numel(shapes[name])) for name in NORM_NAMES]
    segments.append(_Segment("tok_embeddings", _numel(shapes["tok_embeddings"]), quantized=True))
    for name in LAYER_MATRICES:
        per_layer = _numel(shapes[name][1:])
        segments += [_Segment(name, per_layer, layer, quantized=True) for layer in range(config.n_layers)]
    if "wcls" in shapes:
        segments.append(_Segment("wcls", _numel(shapes["wcls"]), quantized=True))
    return _Layout("v2", config, V1_HEADER_BYTES, group_size, tuple(segments))


def _layout(fmt: str, config: ModelConfig, group_size: int | None) -> _Layout:
    if fmt == "v0":
        return _layout_v0(config)
    if fmt == "v1":
        return _layout_v1(config)
    assert group_size is not None
    return _layout_v2(config, group_size)


def expected_file_size(config: ModelConfig, version: int = 0, group_size: int = 64) -> int:
    """The exact size in bytes of a checkpoint of this shape (``group_size`` matters only for v2)."""
    return _layout(_format_name(version), config, group_size).total_bytes()


# --- validation ------------------------------------------------------------------------------------------


def _describe(config: ModelConfig) -> str:
    params = ", ".join(f"{name} {getattr(config, name)}" for name in PARAM_NAMES)
    return f"{params}, {'shared' if config.shared_classifier else 'unshared'} classifier"


def _validate_config(config: ModelConfig, source: str) -> None:
    """Reject shapes llama2.c cannot run, and values so large the header is surely not a checkpoint's."""
    for name, limit in _LIMITS.items():
        value = getattr(config, name)
        if not 1 <= value <= limit:
            raise CheckpointError(f"{source}: {name} = {value} is not in 1..{limit}: {_NOT_A_CHECKPOINT}")
    if config.dim % config.n_heads:
        raise CheckpointError(f"{source}: dim {config.dim} is not a multiple of n_heads {config.n_heads}")
    heads, kv_heads = config.n_heads, config.n_kv_heads
    if heads % kv_heads:
        raise CheckpointError(f"{source}: n_heads {heads} is not a multiple of n_kv_heads {kv_heads}")
    if config.head_size % 2:
        raise CheckpointError(
            f"{source}: head size {config.head_size} (dim / n_heads) is odd; RoPE rotates pairs of values"
        )


def _validate_group_size(layout: _Layout, source: str) -> None:
    """Q8_0 groups tile each flattened matrix; a group size that leaves a remainder misreads the file."""
    group_size = layout.group_size
    assert group_size is not None
    if group_size < 1:
        raise CheckpointError(f"{source}: group size {group_size} is not positive")
    for segment in layout.segments:
        if segment.quantized and segment.numel % group_size:
            raise CheckpointError(
                f"{source}: group size {group_size} does not divide {segment.name} ({segment.numel} values "
                "per matrix); a v2 checkpoint needs every matrix to be a whole number of groups"
            )


def _check_size(layout: _Layout, actual: int, source: str) -> None:
    expected = layout.total_bytes()
    what = f"a {layout.format} checkpoint with {_describe(layout.config)}"
    if layout.group_size is not None:
        what += f", group size {layout.group_size}"
    if actual < expected:
        missing = expected - actual
        raise CheckpointError(
            f"{source}: truncated: {what} is {expected} bytes, the file has {actual} ({missing} missing; "
            f"{_where_file_ends(layout, actual)})"
        )
    if actual > expected:
        raise CheckpointError(
            f"{source}: {actual - expected} trailing bytes: {what} is {expected} bytes, the file has "
            f"{actual}; the header does not match the data, or this is not a llama2.c checkpoint"
        )


def _segment_label(segment: _Segment) -> str:
    return segment.name if segment.layer is None else f"{segment.name} (layer {segment.layer})"


def _where_file_ends(layout: _Layout, size: int) -> str:
    """Which tensor a short file stops in: tells a cut-off download (ends anywhere) from a header that lies
    about the shape (a whole file that ends long before the header's model would)."""
    offset = layout.header_bytes
    for index, segment in enumerate(layout.segments):
        end = offset + layout.segment_bytes(segment)
        if size == offset:
            before = f"after {_segment_label(layout.segments[index - 1])}, " if index else "after the header, "
            return f"the file ends {before}before {_segment_label(segment)}"
        if size < end:
            return f"the file ends inside {_segment_label(segment)}, {size - offset} of its {end - offset} bytes"
        offset = end
    raise AssertionError("_where_file_ends needs a file shorter than its layout")


# --- header parsing --------------------------------------------------------------------------------------


def _truncated_header(source: str, have: int, need: int, what: str) -> CheckpointError:
    return CheckpointError(f"{source}: truncated header: {what} needs {need} bytes, the file has {have}")


def _parse_v0_header(head: bytes, source: str) -> _Layout:
    if len(head) < V0_HEADER_BYTES:
        raise _truncated_header(source, len(head), V0_HEADER_BYTES, "a legacy (v0) header")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = _V0_HEADER.unpack_from(head)
    config = ModelConfig(dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len, vocab > 0)
    _validate_config(config, source)
    return _layout_v0(config)


def _parse_versioned_header(head: bytes, source: str) -> _Layout:
    if len(head) < _MAGIC_VERSION.size:
        raise _truncated_header(source, len(head), V1_HEADER_BYTES, "a v1/v2 header")
    version = _MAGIC_VERSION.unpack_from(head)[1]
    if version not in (1, 2):
        raise CheckpointError(
            f"{source}: unsupported version {version} (llama2.c magic found; llmcu reads versions 1 and 2)"
        )
    if len(head) < V1_HEADER_BYTES:
        raise _truncated_header(source, len(head), V1_HEADER_BYTES, f"a v{version} header")
    _, _, *params, shared = _V1_HEADER.unpack_from(head)
    if shared not in (0, 1):
        raise CheckpointError(f"{source}: shared_classifier byte is {shared}, expected 0 or 1")
    config = ModelConfig(*params, shared_classifier=bool(shared))
    _validate_config(config, source)
    if version == 1:
        return _layout_v1(config)
    layout = _layout_v2(config, _V2_GROUP.unpack_from(head, _V1_HEADER.size)[0])
    _validate_group_size(layout, source)
    return layout


# Files users mistake for llama2.c checkpoints, by their first bytes: naming the format says what to do instead.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"GGUF", "a GGUF file (llama.cpp); llmcu reads llama2.c checkpoints (export.py in llama2.c writes them)"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth file is one); export it with llama2.c's export.py"),
    (b"\x1f\x8b", "a gzip file; unpack it first"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\x7fELF", "an ELF program, not model data"),
)


def _other_format(head: bytes) -> str | None:
    """What a rejected header looks like instead, when that is recognisable."""
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return what
    if not any(head):
        return "all zero bytes (a file allocated but never written, or wiped)"
    if len(head) >= 8 and struct.unpack_from("<Q", head)[0] < len(head) + (1 << 24) and head[8:10] == b'{"':
        return "a safetensors file; export the model to a llama2.c checkpoint with llama2.c's export.py"
    if head.lstrip()[:1] in (b"<", b"{") and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file (HTML or JSON: a download that returned an error page?)"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file"
    return None


def _plan(head: bytes, file_size: int, source: str) -> _Layout:
    """Validate a header (the file's first bytes) against the file size, and say where every tensor is."""
    if file_size == 0:
        raise CheckpointError(f"{source}: file is empty: truncated, or not a llama2.c checkpoint")
    magic = struct.pack("<I", MAGIC)
    if len(head) >= 4 and head.startswith(magic):
        layout = _parse_versioned_header(head, source)
    elif len(head) < 4 and magic.startswith(head):  # cut inside the magic: the start of a v1/v2 file
        raise _truncated_header(source, len(head), V1_HEADER_BYTES, "a v1/v2 header")
    else:  # no v0 header can start with the magic: as a dim it is far above MAX_DIM
        try:
            layout = _parse_v0_header(head, source)
            _check_size(layout, file_size, source)
        except CheckpointError as error:
            other = _other_format(head)
            if other is None:
                raise
            detail = str(error).removeprefix(f"{source}: ")
            raise CheckpointError(f"{source}: not a llama2.c checkpoint: this is {other} ({detail})") from None
    _check_size(layout, file_size, source)
    return layout


# --- reading ---------------------------------------------------------------------------------------------


def _read_values(data: bytes, offset: int, segment: _Segment, group_size: int | None) -> np.ndarray:
    """A segment's values as a new float32 array (Q8_0 dequantized as runq.c does: ``q * scale``)."""
    if not segment.quantized:
        return np.frombuffer(data, _F32, segment.numel, offset).astype(np.float32)
    assert group_size is not None
    q = np.frombuffer(data, _I8, segment.numel, offset)
    scales = np.frombuffer(data, _F32, segment.numel // group_size, offset + segment.numel)
    groups = q.reshape(-1, group_size).astype(np.float32) * scales.astype(np.float32)[:, None]
    return groups.reshape(-1)


def _decode(data: bytes, layout: _Layout) -> dict[str, np.ndarray]:
    shapes = layout.config.tensor_shapes()
    weights: dict[str, np.ndarray] = {}
    offset = layout.header_bytes
    for segment in layout.segments:
        if not segment.skipped:
            values = _read_values(data, offset, segment, layout.group_size)
            shape = shapes[segment.name]
            if segment.layer is None:
                weights[segment.name] = values.reshape(shape)
            else:
                stacked = weights.setdefault(segment.name, np.empty(shape, np.float32))
                stacked[segment.layer] = values.reshape(shape[1:])
        offset += layout.segment_bytes(segment)
    return {name: weights[name] for name in shapes}  # canonical (v0) order whatever the file order


def nonfinite_report(ckpt: Checkpoint) -> dict[str, int]:
    """Count NaN/Inf values per tensor; only tensors that have some are listed, so ``{}`` means clean.

    A diverged training run or a corrupt file shows up here, long before it shows up as garbage tokens on a
    device.
    """
    report: dict[str, int] = {}
    for name, tensor in ckpt.weights.items():
        count = int(tensor.size - np.count_nonzero(np.isfinite(tensor)))
        if count:
            report[name] = count
    return report


def first_nonfinite(tensor: np.ndarray) -> tuple[tuple[int, ...], float] | None:
    """The index and value of the first NaN/Inf of a tensor (C order), or None when it is all finite."""
    bad = np.flatnonzero(~np.isfinite(tensor.reshape(-1)))
    if not bad.size:
        return None
    index = tuple(int(i) for i in np.unravel_index(int(bad[0]), tensor.shape))
    return index, float(tensor[index])


def check_finite(ckpt: Checkpoint, source: str) -> None:
    report = nonfinite_report(ckpt)
    if report:
        listing = []
        for name, count in report.items():
            found = first_nonfinite(ckpt.weights[name])
            assert found is not None
            index, value = found
            where = ", ".join(map(str, index))
            listing.append(f"{name} ({count} value{'s' if count > 1 else ''}, the first {name}[{where}] = {value})")
        raise CheckpointError(
            f"{source}: non-finite weights (NaN or Inf) in {'; '.join(listing)}: the file is corrupt or the "
            "training run diverged (pass allow_nonfinite=True to load it anyway)"
        )


def _stored_codes(layout: _Layout) -> dict[str, object]:
    """A v2 file's Q8_0 matrices, for quantize.keeps_stored_codes: ``"Q8_0/<group size>"`` per kind whose rows are
    whole groups (runq.c's groups run over the flattened matrix; only then are they llmcu's groups of a row), so that
    a q8 build at that group size keeps their codes and scales. Other formats: nothing."""
    if layout.format != "v2" or layout.group_size is None:
        return {}
    shapes = layout.config.tensor_shapes()
    kinds = {segment.name for segment in layout.segments if segment.quantized and not segment.skipped}
    group = layout.group_size
    stored = {kind: f"Q8_0/{group}" for kind in sorted(kinds) if shapes[kind][-1] % group == 0}
    note = (f"llama2.c v2 (Q8_0 in groups of {group}): a q8 build at group_size={group} keeps the codes and scales "
            "of the matrices whose rows are whole groups, others quantize them again")  # fmt: skip
    return {"stored": stored, "notes": [note]} if stored else {}


def parse_checkpoint(
    data: bytes, source: str = "<memory>", *, allow_nonfinite: bool = False, path: Path | None = None
) -> Checkpoint:
    """Decode a whole checkpoint held in memory; ``source`` names it in error messages."""
    layout = _plan(data[:HEADER_BYTES], len(data), source)
    ckpt = Checkpoint(layout.config, _decode(data, layout), layout.format, path, layout.group_size,
                      _stored_codes(layout))  # fmt: skip
    if not allow_nonfinite:
        check_finite(ckpt, source)
    return ckpt


def read_checkpoint(path: str | Path, *, allow_nonfinite: bool = False) -> Checkpoint:
    """Read and validate a v0, v1 or v2 checkpoint; weights come back as float32 in canonical order.

    Only the header is read before the size check, so a bogus header costs nothing; then the file is read
    once and each tensor is copied out of that buffer.
    """
    source = Path(path)
    try:
        with source.open("rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            _plan(handle.read(HEADER_BYTES), file_size, str(source))
            handle.seek(0)
            data = handle.read()
    except OSError as exc:
        raise CheckpointError(f"{source}: cannot read checkpoint: {exc.strerror or exc}") from exc
    if len(data) != file_size:
        raise CheckpointError(f"{source}: file changed size while being read ({file_size} -> {len(data)})")
    return parse_checkpoint(data, str(source), allow_nonfinite=allow_nonfinite, path=source)


def _read_layout(path: str | Path) -> _Layout:
    source = Path(path)
    try:
        with source.open("rb") as handle:
            return _plan(handle.read(HEADER_BYTES), os.fstat(handle.fileno()).st_size, str(source))
    except OSError as exc:
        raise CheckpointError(f"{source}: cannot read checkpoint: {exc.strerror or exc}") from exc


def detect_format(path: str | Path) -> str:
    """``"v0"``, ``"v1"`` or ``"v2"``, after validating the header and size (weights are not read)."""
    return _read_layout(path).format


def detect_config(path: str | Path) -> ModelConfig:
    """The model's shape from a validated header (weights are not read)."""
    return _read_layout(path).config


# --- writing ---------------------------------------------------------------------------------------------


CheckpointLike = Checkpoint | tuple[ModelConfig, Mapping[str, np.ndarray]]


def _format_name(version: int) -> str:
    if version not in (0, 1, 2):
        raise CheckpointError(f"unsupported version {version}; llmcu writes checkpoint versions 0, 1 and 2")
    return f"v{version}"


def _unpack_source(ckpt: CheckpointLike) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The config and float32 weights to write, after checking that they describe each other."""
    config, weights = (ckpt.config, ckpt.weights) if isinstance(ckpt, Checkpoint) else ckpt
    _validate_config(config, "checkpoint to write")
    shapes = config.tensor_shapes()
    missing = [name for name in shapes if name not in weights]
    unexpected = [name for name in weights if name not in shapes]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint to write: weights do not match the config: missing {missing or 'none'}, "
            f"unexpected {unexpected or 'none'} (wcls exists exactly when the classifier is unshared)"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        array = np.asarray(weights[name], dtype=np.float32)
        if array.shape != shape:
            raise CheckpointError(f"checkpoint to write: {name} has shape {array.shape}, not {shape}")
        arrays[name] = array
    return config, arrays


def _encode_header(layout: _Layout) -> bytes:
    config = layout.config
    params = [getattr(config, name) for name in PARAM_NAMES]
    if layout.format == "v0":
        if not config.shared_classifier:
            params[PARAM_NAMES.index("vocab_size")] *= -1
        return _V0_HEADER.pack(*params)
    header = _V1_HEADER.pack(MAGIC, int(layout.format[1]), *params, int(config.shared_classifier))
    if layout.group_size is not None:
        header += _V2_GROUP.pack(layout.group_size)
    return header.ljust(V1_HEADER_BYTES, b"\0")


def rope_tables(config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``(cos, sin)`` RoPE tables, each ``(seq_len, head_size // 2)`` float32, that v0 files carry.

    Frequency ``i`` is ``10000 ** (-2i / head_size)``. Readers ignore these tables; they are written so that
    a v0 file has the size and (to within an ulp of cos/sin) the content of llama2.c's own export, whose
    frequencies and angles are float32, as here.
    """
    f32 = np.float32
    exponents = np.arange(0, config.head_size, 2, dtype=f32) / f32(config.head_size)
    freqs = f32(1) / (f32(10000) ** exponents)
    angles = np.outer(np.arange(config.seq_len, dtype=f32), freqs).astype(np.float64)
    return np.cos(angles).astype(f32), np.sin(angles).astype(f32)


def quantize_q8_flat(values: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 over a flattened matrix, like llama2.c's v2 export: ``scale = max|w| / 127``, ``q = round(w/s)``.

    Groups may cross rows (unlike :mod:`llmcu.model.quantize`). Ties round to even, like the export's
    ``torch.round``. An all-zero group gets scale 0 and q 0 instead of a division by zero.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if group_size < 1 or flat.size % group_size:
        raise CheckpointError(f"group size {group_size} does not divide a matrix of {flat.size} values")
    if not np.all(np.isfinite(flat)):
        raise CheckpointError("cannot quantize non-finite (NaN or Inf) weights")
    groups = flat.reshape(-1, group_size)
    scales = (np.max(np.abs(groups), axis=1) / np.float32(_Q8_MAX)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(groups / safe[:, None]), -_Q8_MAX, _Q8_MAX).astype(_I8)
    return q.reshape(-1), scales


def _segment_bytes(segment: _Segment, weights: dict[str, np.ndarray], layout: _Layout) -> bytes:
    tensor = weights[segment.name]
    values = tensor if segment.layer is None else tensor[segment.layer]
    if not segment.quantized:
        return np.ascontiguousarray(values, dtype=_F32).tobytes()
    assert layout.group_size is not None
    try:
        q, scales = quantize_q8_flat(values, layout.group_size)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint to write: {segment.name}: {exc}") from exc
    return q.tobytes() + scales.astype(_F32).tobytes()


def checkpoint_bytes(ckpt: CheckpointLike, version: int = 0, group_size: int = 64) -> bytes:
    """The bytes of a v0, v1 or v2 checkpoint; ``group_size`` is used only by v2."""
    fmt = _format_name(version)
    config, weights = _unpack_source(ckpt)
    layout = _layout(fmt, config, group_size)
    if fmt == "v2":
        _validate_group_size(layout, "checkpoint to write")
    tables = dict(zip(ROPE_TABLES, rope_tables(config), strict=True)) if fmt == "v0" else {}
    parts = [_encode_header(layout)]
    for segment in layout.segments:
        if segment.skipped:
            parts.append(np.ascontiguousarray(tables[segment.name], dtype=_F32).tobytes())
        else:
            parts.append(_segment_bytes(segment, weights, layout))
    data = b"".join(parts)
    assert len(data) == layout.total_bytes()
    return data


def write_checkpoint(path: str | Path, ckpt: CheckpointLike, version: int = 0, group_size: int = 64) -> None:
    """Write a v0, v1 or v2 checkpoint atomically: a reader never sees half a file."""
    write_bytes_atomic(path, checkpoint_bytes(ckpt, version, group_size))


# --- synthetic models ------------------------------------------------------------------------------------


def random_checkpoint(config: ModelConfig, seed: int = 0, scale: float = 0.02) -> Checkpoint:
    """Deterministic random weights of a given shape, for models that cannot be downloaded offline.

    Matrices are ``normal * scale``; norm weights are ``1 + normal * scale``, near the value trained models
    have, so activations keep a sensible magnitude. The same ``(config, seed, scale)`` always gives the same
    weights.
    """
    _validate_config(config, "random checkpoint")
    rng = np.random.default_rng(seed)
    factor = np.float32(scale)
    weights: dict[str, np.ndarray] = {}
    for name, shape in config.tensor_shapes().items():
        noise = rng.standard_normal(shape, dtype=np.float32) * factor
        weights[name] = noise + np.float32(1.0) if name in NORM_NAMES else noise
    return Checkpoint(config, weights, "v0", None, None, {"random_seed": seed, "random_scale": scale})
