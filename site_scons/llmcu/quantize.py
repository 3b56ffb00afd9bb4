"""Symmetric group quantization (q8, q4) whose groups never cross a matrix row.

The arithmetic is specified in ``runtime_c/README.md`` ("The numeric contract"); this module is its Python
definition. A row whose length is not a multiple of the group size ends in a shorter group (stories260K's
hidden_dim of 172 with groups of 32 gives five groups of 32 and one of 12), so nothing is rejected and
nothing is silently misaligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import QuantizationError

QTYPES = ("fp32", "q8", "q4")
QMAX = {"q8": 127, "q4": 7}


def round_half_away(values: np.ndarray) -> np.ndarray:
    """C's ``roundf``: halves round away from zero. Computed in float64, where ``|v| + 0.5`` is exact."""
    wide = values.astype(np.float64)
    return np.sign(wide) * np.floor(np.abs(wide) + 0.5)


def group_count(cols: int, group_size: int) -> int:
    return -(-cols // group_size)


def group_bounds(cols: int, group_size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` column range of each group of a row."""
    return [(start, min(start + group_size, cols)) for start in range(0, cols, group_size)]


def quantize_groups(matrix: np.ndarray, group_size: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize each row of a float32 ``(rows, cols)`` matrix in groups.

    Returns ``(q, scales)``: ``q`` int8 ``(rows, cols)`` and ``scales`` float32 ``(rows, ngroups)``.
    """
    if matrix.ndim != 2:
        raise QuantizationError(f"expected a matrix, got shape {matrix.shape}")
    if group_size < 1:
        raise QuantizationError(f"group size must be positive, got {group_size}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    rows, cols = matrix.shape
    q = np.zeros((rows, cols), dtype=np.int8)
    scales = np.zeros((rows, group_count(cols, group_size)), dtype=np.float32)
    qmax_f = np.float32(qmax)
    for g, (start, end) in enumerate(group_bounds(cols, group_size)):
        block = matrix[:, start:end]
        amax = np.max(np.abs(block), axis=1)
        scale = (amax / qmax_f).astype(np.float32)
        scales[:, g] = scale
        safe = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
        ratio = (block / safe[:, None]).astype(np.float32)
        rounded = np.clip(round_half_away(ratio), -qmax, qmax)
        rounded[scale == 0, :] = 0
        q[:, start:end] = rounded.astype(np.int8)
    return q, scales


def quantize_vector(x: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize an activation vector to int8 with the weight's group layout (the contract's step 1)."""
    q, scales = quantize_groups(x.reshape(1, -1), group_size, QMAX["q8"])
    return q[0], scales[0]


def pack_q4(q: np.ndarray) -> np.ndarray:
    """Pack int4 values in ``[-7, 7]`` two per byte, ``q + 8``, even column in the low nibble.

    Each row starts on a byte boundary; an odd-length row's last high nibble is 0.
    """
    rows, cols = q.shape
    padded = np.zeros((rows, cols + (cols & 1)), dtype=np.uint8)
    padded[:, :cols] = (q.astype(np.int16) + 8).astype(np.uint8)
    if cols & 1:
        padded[:, cols] = 0
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


def unpack_q4(packed: np.ndarray, cols: int) -> np.ndarray:
    low = (packed & 0x0F).astype(np.int16) - 8
    high = (packed >> 4).astype(np.int16) - 8
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.int16)
    out[:, 0::2] = low
    out[:, 1::2] = high
    return out[:, :cols].astype(np.int8)


@dataclass
class QuantizedMatrix:
    """One matrix (or a stack of per-layer matrices) in a given quantization type.

    ``q`` and ``scales`` have a leading layer axis when the source tensor is per layer.
    For fp32, ``q`` holds the float32 values and ``scales`` is None.
    """

    qtype: str
    group_size: int
    q: np.ndarray
    scales: np.ndarray | None

    @property
    def rows(self) -> int:
        return int(self.q.shape[-2])

    @property
    def cols(self) -> int:
        return int(self.q.shape[-1])

    def dequantize(self) -> np.ndarray:
        if self.qtype == "fp32":
            return self.q.astype(np.float32)
        assert self.scales is not None
        expanded = np.repeat(self.scales, self.group_size, axis=-1)[..., : self.cols]
        return (self.q.astype(np.float32) * expanded).astype(np.float32)

    def storage(self) -> tuple[bytes, bytes]:
        """The bytes the runtime links in: (weights, scales); scales empty for fp32."""
        if self.qtype == "fp32":
            return np.ascontiguousarray(self.q, dtype="<f4").tobytes(), b""
        assert self.scales is not None
        flat_q = self.q.reshape(-1, self.cols)
        data = pack_q4(flat_q) if self.qtype == "q4" else flat_q.astype(np.int8)
        return np.ascontiguousarray(data).tobytes(), np.ascontiguousarray(self.scales, dtype="<f4").tobytes()

    def nbytes(self) -> int:
        weights, scales = self.storage()
        return len(weights) + len(scales)


def quantize_matrix(tensor: np.ndarray, qtype: str, group_size: int) -> QuantizedMatrix:
    """Quantize a ``(rows, cols)`` or ``(layers, rows, cols)`` float32 tensor."""
    if qtype not in QTYPES:
        raise QuantizationError(f"unknown quantization type {qtype!r}; allowed: {', '.join(QTYPES)}")
    tensor = np.asarray(tensor, dtype=np.float32)
    if qtype == "fp32":
        return QuantizedMatrix("fp32", group_size, tensor.copy(), None)
    lead = tensor.shape[:-2]
    rows, cols = tensor.shape[-2:]
    q, scales = quantize_groups(tensor.reshape(-1, cols), group_size, QMAX[qtype])
    return QuantizedMatrix(
        qtype,
        group_size,
        q.reshape(*lead, rows, cols),
        scales.reshape(*lead, rows, group_count(cols, group_size)),
    )


@dataclass(frozen=True)
class TensorReport:
    name: str
    qtype: str
    shape: tuple[int, ...]
    nbytes: int
    max_abs_error: float
    rmse: float
    cosine: float

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "qtype": self.qtype,
            "shape": list(self.shape),
            "bytes": self.nbytes,
            "max_abs_error": self.max_abs_error,
            "rmse": self.rmse,
            "cosine": self.cosine,
        }


def error_report(name: str, original: np.ndarray, quantized: QuantizedMatrix) -> TensorReport:
    """Bytes, max abs error, RMSE and cosine similarity of a quantized tensor against its source."""
    ref = np.asarray(original, dtype=np.float64).ravel()
    approx = quantized.dequantize().astype(np.float64).ravel()
    diff = approx - ref
    norm = float(np.linalg.norm(ref) * np.linalg.norm(approx))
    cosine = float(np.dot(ref, approx) / norm) if norm > 0 else 1.0
    return TensorReport(
        name=name,
        qtype=quantized.qtype,
        shape=tuple(int(s) for s in original.shape),
        nbytes=quantized.nbytes(),
        max_abs_error=float(np.max(np.abs(diff))) if diff.size else 0.0,
        rmse=float(np.sqrt(np.mean(diff * diff))) if diff.size else 0.0,
        cosine=cosine,
    )


@dataclass(frozen=True)
class QuantPlan:
    """Which quantization each matrix kind gets: a default, one group size, and per-kind overrides.

    ``overrides`` maps a kind from ``config.MATRIX_KINDS`` (``tok_embeddings``, ``wq`` ... ``wcls``) to a
    qtype, e.g. ``{"tok_embeddings": "q8"}`` keeps the embedding table in q8 while the layers are q4.
    """

    default: str = "fp32"
    group_size: int = 32
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        from .config import MATRIX_KINDS

        if self.default not in QTYPES:
            raise QuantizationError(f"unknown quant {self.default!r}; allowed: {', '.join(QTYPES)}")
        if self.group_size < 2 or self.group_size % 2:
            raise QuantizationError(f"group_size must be an even number >= 2, got {self.group_size}")
        for kind, qtype in self.overrides:
            if kind not in MATRIX_KINDS:
                raise QuantizationError(
                    f"quant override names unknown tensor {kind!r}; allowed: {', '.join(MATRIX_KINDS)}"
                )
            if qtype not in QTYPES:
                raise QuantizationError(f"quant override {kind}={qtype}: unknown type; allowed: {', '.join(QTYPES)}")

    @classmethod
    def parse(cls, default: str, group_size: int, overrides: str = "") -> QuantPlan:
        """Build a plan from command-line text: ``overrides`` is ``kind=qtype[,kind=qtype...]``."""
        pairs: list[tuple[str, str]] = []
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            kind, sep, qtype = item.partition("=")
            if not sep:
                raise QuantizationError(f"quant override {item!r} is not of the form kind=qtype (e.g. w2=q8)")
            pairs.append((kind.strip(), qtype.strip()))
        return cls(default, group_size, tuple(pairs))

    def qtype(self, kind: str) -> str:
        return dict(self.overrides).get(kind, self.default)

    @property
    def name(self) -> str:
        """A short label for build directories: ``q4`` or ``q4+tok_embeddings=q8``."""
        extras = "".join(f"+{kind}={qtype}" for kind, qtype in sorted(self.overrides))
        return self.default + extras


def quantize_model(weights: dict[str, np.ndarray], plan: QuantPlan) -> dict[str, QuantizedMatrix]:
    """Quantize every matrix kind present in ``weights`` (a checkpoint's float32 tensors) per ``plan``."""
    from .config import MATRIX_KINDS

    return {
        kind: quantize_matrix(weights[kind], plan.qtype(kind), plan.group_size)
        for kind in MATRIX_KINDS
        if kind in weights
    }
