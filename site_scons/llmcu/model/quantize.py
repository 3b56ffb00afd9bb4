"""Symmetric group quantization (q8, q4) whose groups never cross a matrix row.

The arithmetic is specified in ``runtime_c/README.md`` ("The numeric contract"); this module is its Python
definition. A row whose length is not a multiple of the group size ends in a shorter group (stories260K's
hidden_dim of 172 with groups of 32 gives five groups of 32 and one of 12), so nothing is rejected and
nothing is silently misaligned.

What the kernels read is fixed: a float32 scale per group and integer codes (q8 -127..127, q4 -8..7). How the
weights are fitted to it is not: llmcu.model.fitting has the fits (``absmax``, ``search``, ``gptq``) and
llmcu.model.calibration the activation statistics the better ones use. Activations and the KV cache are quantized
at run time by the contract's absmax rule (:func:`quantize_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import QuantizationError
from .fitting import FITS, absmax_groups, fit_q4z, group_bounds, q4z_encode, round_half_away  # noqa: F401 - the contract's names, here too
from .fitting import fit as fit_matrix

# q4z: 4-bit codes n with a zero point z per group, the weight being scale * (n - z), and one 16-bit word per
# group for both (llmcu.model.fitting.q4z_decode; runtime_c/README.md, "q4z").
QTYPES = ("fp32", "q8", "q4", "q4z")
QMAX = {"q8": 127, "q4": 7}
# How a build fits its weights (llmcu.model.fitting) and what text calibrates the fit (llmcu.model.calibration).
DEFAULT_FIT = FITS[0]
DEFAULT_CALIBRATION = "sampled"


def group_count(cols: int, group_size: int) -> int:
    return -(-cols // group_size)


def quantize_groups(matrix: np.ndarray, group_size: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize each row of a float32 ``(rows, cols)`` matrix in groups by the contract's absmax rule (what
    the runtime does to activations and the KV cache; llama2.c's weight fit).

    Returns ``(q, scales)``: ``q`` int8 ``(rows, cols)`` and ``scales`` float32 ``(rows, ngroups)``.
    """
    if matrix.ndim != 2:
        raise QuantizationError(f"expected a matrix, got shape {matrix.shape}")
    if group_size < 1:
        raise QuantizationError(f"group size must be positive, got {group_size}")
    return absmax_groups(matrix, group_size, qmax)


def matrix_bytes(qtype: str, rows: int, cols: int, group_size: int) -> int:
    """What one ``(rows, cols)`` matrix of ``qtype`` stores: its codes and its group scales (or words)."""
    if qtype == "fp32":
        return rows * cols * 4
    row_bytes = cols if qtype == "q8" else (cols + 1) // 2
    return rows * (row_bytes + (2 if qtype == "q4z" else 4) * group_count(cols, group_size))


def quantize_vector(x: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize an activation vector to int8 with the weight's group layout (the contract's step 1)."""
    q, scales = quantize_groups(x.reshape(1, -1), group_size, QMAX["q8"])
    return q[0], scales[0]


def pack_q4(q: np.ndarray) -> np.ndarray:
    """Pack int4 values in ``[-8, 7]`` two per byte, ``q + 8``, even column in the low nibble.

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
    For fp32, ``q`` holds the float32 values and ``scales`` is None. For q4z, ``q`` holds ``n - z`` (what
    multiplies the scale) and ``zeros`` the ``z`` of each group.
    """

    qtype: str
    group_size: int
    q: np.ndarray
    scales: np.ndarray | None
    zeros: np.ndarray | None = None  # q4z: the zero point of each group (uint8, the shape of ``scales``)

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
        if self.qtype == "q4z":
            assert self.zeros is not None
            flat_zeros = self.zeros.reshape(flat_q.shape[0], -1)
            codes = flat_q.astype(np.int16) + np.repeat(flat_zeros, self.group_size, axis=1)[:, : self.cols]
            words = q4z_encode(self.scales.reshape(flat_zeros.shape), flat_zeros).astype("<u2")
            return pack_q4((codes - 8).astype(np.int8)).tobytes(), np.ascontiguousarray(words).tobytes()
        data = pack_q4(flat_q) if self.qtype == "q4" else flat_q.astype(np.int8)
        return np.ascontiguousarray(data).tobytes(), np.ascontiguousarray(self.scales, dtype="<f4").tobytes()

    def nbytes(self) -> int:
        weights, scales = self.storage()
        return len(weights) + len(scales)


def quantize_matrix(
    tensor: np.ndarray,
    qtype: str,
    group_size: int,
    fit: str = "search",
    hessians: Sequence[np.ndarray | None] | None = None,
) -> QuantizedMatrix:
    """Quantize a ``(rows, cols)`` or ``(layers, rows, cols)`` float32 tensor with the ``fit`` of
    llmcu.model.fitting; ``hessians``: per layer (one for a matrix) its input's ``E[x x^T]``, or None."""
    if qtype not in QTYPES:
        raise QuantizationError(f"unknown quantization type {qtype!r}; allowed: {', '.join(QTYPES)}")
    tensor = np.asarray(tensor, dtype=np.float32)
    if qtype == "fp32":
        return QuantizedMatrix("fp32", group_size, tensor.copy(), None)
    if tensor.ndim not in (2, 3):
        raise QuantizationError(f"expected a matrix or a stack of matrices, got shape {tensor.shape}")
    if group_size < 1:
        raise QuantizationError(f"group size must be positive, got {group_size}")
    stack = tensor.reshape(-1, *tensor.shape[-2:])
    hessians = list(hessians) if hessians is not None else [None] * len(stack)
    if qtype == "q4z":
        triples = [fit_q4z(matrix, group_size, fit, h) for matrix, h in zip(stack, hessians, strict=True)]
        scale_shape = (*tensor.shape[:-1], triples[0][1].shape[-1])
        return QuantizedMatrix(
            qtype,
            group_size,
            np.stack([t[0] for t in triples]).reshape(tensor.shape),
            np.stack([t[1] for t in triples]).reshape(scale_shape),
            np.stack([t[2] for t in triples]).reshape(scale_shape),
        )
    fitted = [fit_matrix(matrix, qtype, group_size, fit, h) for matrix, h in zip(stack, hessians, strict=True)]
    q = np.stack([pair[0] for pair in fitted]).reshape(tensor.shape)
    scales = np.stack([pair[1] for pair in fitted])
    return QuantizedMatrix(qtype, group_size, q, scales.reshape(*tensor.shape[:-1], scales.shape[-1]))


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
    # Sums in numpy's own order, not BLAS's: the report is a generated file and must not change with the CPU.
    norm = float(np.sqrt(np.sum(ref * ref)) * np.sqrt(np.sum(approx * approx)))
    cosine = float(np.sum(ref * approx) / norm) if norm > 0 else 1.0
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
    fit: str = DEFAULT_FIT  # llmcu.model.fitting's method
    calibration: str = DEFAULT_CALIBRATION  # llmcu.model.calibration's source: sampled, none or a text file's path

    def __post_init__(self) -> None:
        from ..core.config import MATRIX_KINDS

        if self.default not in QTYPES:
            raise QuantizationError(f"unknown quant {self.default!r}; allowed: {', '.join(QTYPES)}")
        if self.fit not in FITS:
            raise QuantizationError(f"unknown fit {self.fit!r}; allowed: {', '.join(FITS)}")
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
    def parse(
        cls,
        default: str,
        group_size: int,
        overrides: str = "",
        fit: str = DEFAULT_FIT,
        calibration: str = DEFAULT_CALIBRATION,
    ) -> QuantPlan:
        """Build a plan from command-line text: ``overrides`` is ``kind=qtype[,kind=qtype...]``."""
        pairs: list[tuple[str, str]] = []
        for item in filter(None, (part.strip() for part in overrides.split(","))):
            kind, sep, qtype = item.partition("=")
            if not sep:
                raise QuantizationError(f"quant override {item!r} is not of the form kind=qtype (e.g. w2=q8)")
            pairs.append((kind.strip(), qtype.strip()))
        return cls(default, group_size, tuple(pairs), fit, calibration)

    def qtype(self, kind: str) -> str:
        return dict(self.overrides).get(kind, self.default)

    @property
    def name(self) -> str:
        """A short label for build directories: ``q4`` or ``q4+tok_embeddings=q8``."""
        extras = "".join(f"+{kind}={qtype}" for kind, qtype in sorted(self.overrides))
        return self.default + extras

    @property
    def quantized(self) -> bool:
        return self.default != "fp32" or any(qtype != "fp32" for _, qtype in self.overrides)

    @property
    def calibrated(self) -> bool:
        """Whether quantizing with this plan reads calibration statistics."""
        from .calibration import NONE

        return self.quantized and self.fit != "absmax" and self.calibration != NONE

    def with_types(self, default: str, overrides: dict[str, str]) -> QuantPlan:
        """The same fit and calibration with other types (``overrides`` equal to ``default`` are dropped)."""
        kept = tuple(sorted((kind, qtype) for kind, qtype in overrides.items() if qtype != default))
        return QuantPlan(default, self.group_size, kept, self.fit, self.calibration)


def quantize_model(
    weights: dict[str, np.ndarray],
    plan: QuantPlan,
    calibration: object = None,
    progress: Callable[[int], None] | None = None,
    kept: dict[str, QuantizedMatrix] | None = None,
) -> dict[str, QuantizedMatrix]:
    """Quantize every matrix kind present in ``weights`` (a checkpoint's float32 tensors) per ``plan``;
    ``calibration`` (llmcu.model.calibration.Calibration) steers the fit; ``progress`` gets 1 per matrix done.
    ``kept`` holds kinds already quantized exactly as a source file stored them (:func:`keep_stored`), which are
    taken as they are."""
    from ..core.config import MATRIX_KINDS

    out = {}
    for kind in MATRIX_KINDS:
        if kind not in weights:
            continue
        exact = (kept or {}).get(kind)
        if exact is None:
            exact = quantize_kind(weights[kind], kind, plan.qtype(kind), plan.group_size, plan.fit, calibration)
        out[kind] = exact
        if progress is not None:
            progress(1 if np.ndim(weights[kind]) == 2 else int(np.shape(weights[kind])[0]))
    return out


def keep_stored(weights: dict[str, np.ndarray], plan: QuantPlan, stored: dict[str, str]) -> dict[str, QuantizedMatrix]:
    """The kinds a source file held quantized (``stored``: kind -> its type, ``{"w1": "Q4_0"}``) that this plan
    keeps (:func:`keeps_stored_codes`), with the file's codes and scales recovered exactly; a kind whose values do
    not come apart into such codes after all is left out, and fitted like any other."""
    out = {}
    for kind, source in stored.items():
        if kind in weights and keeps_stored_codes(source, plan.qtype(kind), plan.group_size):
            exact = quantize_exact(weights[kind], plan.qtype(kind), plan.group_size)
            if exact is not None:
                out[kind] = exact
    return out


def keeps_stored_codes(stored: str, qtype: str, group_size: int) -> bool:
    """Whether a tensor stored as ``stored`` keeps its codes as llmcu's ``qtype``: GGUF's Q8_0 and Q4_0 blocks are
    32 codes (int8 -127..127, or 4-bit -8..7) with one float16 scale, which are llmcu's q8 and q4 groups of 32 with
    a float32 scale (Q4_0's scale may be negative, which the kernels take as it is); llama2.c's v2 files say
    ``"Q8_0/<group size>"`` (runq.c's groups, int8 codes with a float32 scale). The K-quants and the other block
    types have scales of scales or offsets that do not map, and are fitted again."""
    kind, _, group = stored.partition("/")
    return (kind, qtype) in {("Q8_0", "q8"), ("Q4_0", "q4")} and group_size == int(group or 32)


def kept_from_source(ckpt: object, plan: QuantPlan, quantized: dict[str, QuantizedMatrix]) -> dict[str, str]:
    """The matrix kinds whose stored codes this build kept (kind -> the source's type, e.g. ``"Q4_0"``): those
    :func:`keeps_stored_codes` allows and whose quantized values are the checkpoint's, bit for bit."""
    stored = getattr(ckpt, "extra", {}).get("stored", {})
    weights = ckpt.weights  # type: ignore[attr-defined]
    return {
        kind: source
        for kind, source in stored.items()
        if kind in quantized and keeps_stored_codes(source, quantized[kind].qtype, plan.group_size)
        and np.array_equal(quantized[kind].dequantize(), weights[kind])
    }  # fmt: skip


def quantize_exact(tensor: np.ndarray, qtype: str, group_size: int) -> QuantizedMatrix | None:
    """The codes and scales that give back ``tensor`` (all its layers) exactly (fitting.fit_exact), or None when
    it was not quantized like that after all."""
    from .fitting import fit_exact

    stack = [tensor] if np.ndim(tensor) == 2 else list(tensor)
    pairs = [fit_exact(matrix, qtype, group_size) for matrix in stack]
    if any(pair is None for pair in pairs):
        return None
    q = np.stack([pair[0] for pair in pairs if pair is not None]).reshape(np.shape(tensor))
    scales = np.stack([pair[1] for pair in pairs if pair is not None])
    return QuantizedMatrix(qtype, group_size, q, scales.reshape(*np.shape(tensor)[:-1], scales.shape[-1]))


def quantize_kind(
    tensor: np.ndarray, kind: str, qtype: str, group_size: int, fit: str, calibration: object = None
) -> QuantizedMatrix:
    """One matrix kind (all its layers) with the statistics ``calibration`` holds for its input."""
    layers = None if np.ndim(tensor) == 2 else int(np.shape(tensor)[0])
    hessians = None
    if calibration is not None and qtype != "fp32" and fit != "absmax":
        if layers is None:
            hessians = [calibration.hessian(kind)]  # type: ignore[attr-defined]
        else:
            hessians = [calibration.hessian(kind, layer) for layer in range(layers)]  # type: ignore[attr-defined]
    return quantize_matrix(tensor, qtype, group_size, fit, hessians)


def quantize_checkpoint(
    ckpt: object, plan: QuantPlan, tokenizer: object = None, show_progress: bool = False
) -> dict[str, QuantizedMatrix]:
    """Calibrate (when the plan's fit reads statistics) and quantize a checkpoint: what every build and the
    Python reference do, so that they hold the same codes. Remembered on disk (llmcu.model.quantcache)."""
    from . import calibration, quantcache

    cache, digest = None, None
    if plan.quantized and quantcache.enabled(plan.calibration):
        digest = calibration.weights_digest(ckpt)  # type: ignore[arg-type]
        stored = sorted(getattr(ckpt, "extra", {}).get("stored", {}).items())
        fields = (plan.default, plan.group_size, sorted(plan.overrides), plan.fit, plan.calibration, stored)
        cache = quantcache.cache_path(quantcache.cache_key(digest, fields))
        cached = quantcache.load(cache)
        if cached is not None:
            return {kind: QuantizedMatrix(*matrix) for kind, matrix in cached.items()}
    quantized = _quantize_checkpoint(ckpt, plan, tokenizer, show_progress, digest)
    if cache is not None:
        quantcache.store(cache, {k: (m.qtype, m.group_size, m.q, m.scales, m.zeros) for k, m in quantized.items()})
    return quantized


def _quantize_checkpoint(
    ckpt: object, plan: QuantPlan, tokenizer: object, show_progress: bool, digest: str | None
) -> dict[str, QuantizedMatrix]:
    from . import calibration

    weights = ckpt.weights  # type: ignore[attr-defined]
    kept = keep_stored(weights, plan, getattr(ckpt, "extra", {}).get("stored", {}))
    fitted = [kind for kind in weights
              if kind in calibration.INPUT_OF and plan.qtype(kind) != "fp32" and kind not in kept]  # fmt: skip
    stats = None
    if plan.calibrated and fitted:  # only the inputs of the matrices fitted here (a kept GGUF block needs none)
        inputs = frozenset(calibration.INPUT_OF[kind] for kind in fitted)
        stats = calibration.calibrate(ckpt, plan.calibration, tokenizer, show_progress, digest, inputs)  # type: ignore[arg-type]
    bar = None
    if show_progress and plan.quantized:
        from tqdm import tqdm

        total = sum(1 if np.ndim(w) == 2 else int(np.shape(w)[0]) for w in weights.values() if np.ndim(w) >= 2)
        bar = tqdm(total=total, desc=f"quantizing ({plan.fit})", unit="matrix", leave=False, dynamic_ncols=True)
    try:
        return quantize_model(weights, plan, stats, bar.update if bar is not None else None, kept)
    finally:
        if bar is not None:
            bar.close()
