"""The Python reference transformer: the numeric contract of ``runtime_c/README.md``, executed.

Every sum the contract calls sequential is computed as ``np.cumsum(..., dtype=float32)[..., -1]``:
an accumulate is a left-to-right float32 loop, unlike ``np.dot``/``@``/``np.sum``, which use BLAS or
pairwise order. Elementwise float32 operations round exactly like C without FMA contraction, so the
logits are bit-identical to a plain C loop compiled with ``-ffp-contract=off``.

The C math functions (``expf``, ``cosf``, ``sinf``, ``powf``) come from a :class:`CMath`: either the
host's C library through ctypes (what a host C build calls, ``"host"``), or correctly rounded values
computed in float64 (``"exact"``). glibc's functions are not correctly rounded: ``cosf``/``sinf`` differ
from the correctly rounded value for about 1% of RoPE's angles and ``expf`` for about 0.06% of
arguments, so ``"auto"`` prefers the host library when it can be loaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..core.config import LAYER_MATRICES, MATRIX_KINDS, ModelConfig
from ..core.errors import OptionError
from . import kvq16
from .checkpoint import Checkpoint
from .kvcache import check_kv_type, kv_type_candidates, stored
from .quantize import (
    DEFAULT_CALIBRATION,
    DEFAULT_FIT,
    QuantizedMatrix,
    QuantPlan,
    quantize_checkpoint,
    quantize_vector,
)

F32 = np.float32
RMS_EPS = F32(1e-5)
ROPE_THETA = F32(10000.0)
MATH_KINDS = ("auto", "host", "exact")

# A float64 exp result closer than this (in float32 ULPs) to a float32 rounding boundary is handed to the
# host library: glibc's expf is off by at most 0.502 ULP, so only such results can round differently.
_HARD_ROUNDING_ULPS = 0.05


# ---------------------------------------------------------------------------------------------------------
# C math library functions
# ---------------------------------------------------------------------------------------------------------


class CMath:
    """Correctly rounded float32 ``expf``, ``cosf``, ``sinf`` and ``powf`` (computed in float64)."""

    name = "exact"

    def expf(self, x: np.ndarray) -> np.ndarray:
        return _round_to_f32(np.exp(np.asarray(x, dtype=np.float64)))

    def cosf(self, x: np.ndarray) -> np.ndarray:
        return np.cos(np.asarray(x, dtype=np.float64)).astype(F32)

    def sinf(self, x: np.ndarray) -> np.ndarray:
        return np.sin(np.asarray(x, dtype=np.float64)).astype(F32)

    def powf(self, base: float, exponents: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore"):
            return np.power(np.float64(F32(base)), np.asarray(exponents, dtype=np.float64)).astype(F32)

    def attention(self, keys: np.ndarray, values: np.ndarray, heads: np.ndarray) -> np.ndarray:
        """The contract's attention for every head at once: keys and values ``(t, head, head_size)``, the
        queries ``(1, head, head_size)``; scores ``q . k / sqrt(head_size)``, softmax over ``t``, the weighted
        sum of the values in position order. Numerics that compute it another way (llmcu.model.fastmath) override it."""
        head_size = heads.shape[-1]
        scores = (sequential_sum(keys * heads, axis=2) / np.sqrt(F32(head_size))).astype(F32)
        att = softmax(scores, self, axis=0)
        return sequential_sum(att[:, :, None] * values, axis=0)


class HostCMath(CMath):
    """The host C library's functions, called through ctypes.

    ``expf`` is called only where the correctly rounded value could differ (results within
    ``_HARD_ROUNDING_ULPS`` of a rounding boundary), which keeps softmax fast; ``cosf``/``sinf``/``powf``
    are only used for small tables and are always called.
    """

    name = "host"

    def __init__(self, library: ctypes.CDLL) -> None:
        self._expf = _bind(library, "expf", 1)
        self._cosf = _bind(library, "cosf", 1)
        self._sinf = _bind(library, "sinf", 1)
        self._powf = _bind(library, "powf", 2)

    def expf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=F32)
        wide = np.exp(x.astype(np.float64))
        out = _round_to_f32(wide)
        hard = _near_rounding_boundary(wide, out)
        if np.any(hard):
            flat_x, flat_out, flat_hard = x.reshape(-1), out.reshape(-1), hard.reshape(-1)
            for index in np.flatnonzero(flat_hard):
                flat_out[index] = self._expf(float(flat_x[index]))
        return out

    def cosf(self, x: np.ndarray) -> np.ndarray:
        return _elementwise(self._cosf, x)

    def sinf(self, x: np.ndarray) -> np.ndarray:
        return _elementwise(self._sinf, x)

    def powf(self, base: float, exponents: np.ndarray) -> np.ndarray:
        return _elementwise(lambda e: self._powf(float(F32(base)), e), exponents)


def _round_to_f32(wide: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        return wide.astype(F32)


def _bind(library: ctypes.CDLL, name: str, arity: int) -> Callable[..., float]:
    function = getattr(library, name)
    function.restype = ctypes.c_float
    function.argtypes = [ctypes.c_float] * arity
    return function


def _elementwise(function: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    flat = np.asarray(x, dtype=F32).reshape(-1)
    out = np.array([function(float(value)) for value in flat], dtype=F32)
    return out.reshape(np.shape(x))


def _near_rounding_boundary(wide: np.ndarray, rounded: np.ndarray) -> np.ndarray:
    """Where the float64 value ``wide`` lies within ``_HARD_ROUNDING_ULPS`` of the midpoint between its
    float32 rounding ``rounded`` and the neighbour on its side."""
    with np.errstate(all="ignore"):
        toward = np.where(wide > rounded, F32(np.inf), F32(-np.inf)).astype(F32)
        neighbour = np.nextafter(rounded, toward).astype(np.float64)
        low = rounded.astype(np.float64)
        midpoint = (low + neighbour) * 0.5
        distance = np.abs(wide - midpoint) / np.abs(neighbour - low)
        return (wide != low) & ~(distance >= _HARD_ROUNDING_ULPS)


@functools.cache
def _host_library() -> ctypes.CDLL | None:
    for name in (ctypes.util.find_library("m"), ctypes.util.find_library("c"), "libm.so.6"):
        if not name:
            continue
        try:
            library = ctypes.CDLL(name)
            _bind(library, "expf", 1)(0.0)
            return library
        except (OSError, AttributeError):
            continue
    return None


def c_math(kind: str = "auto") -> CMath:
    """``"host"`` (the C library, error if unavailable), ``"exact"``, or ``"auto"`` (host if available)."""
    if kind not in MATH_KINDS:
        raise OptionError(f"unknown math library {kind!r}; allowed: {', '.join(MATH_KINDS)}")
    if kind == "exact":
        return CMath()
    library = _host_library()
    if library is None:
        if kind == "host":
            raise OptionError("the host C math library cannot be loaded through ctypes; use 'exact'")
        return CMath()
    return HostCMath(library)


# ---------------------------------------------------------------------------------------------------------
# Contract primitives
# ---------------------------------------------------------------------------------------------------------


def sequential_sum(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Left-to-right float32 sum along ``axis`` (a C accumulation loop starting at 0.0f)."""
    totals = np.cumsum(values, axis=axis, dtype=F32)
    return np.take(totals, -1, axis=axis)


def softmax(x: np.ndarray, cmath: CMath, axis: int = -1) -> np.ndarray:
    """``m = max``; ``e = expf(x - m)``; ``s`` = sequential sum of ``e``; ``p = e / s``."""
    x = np.asarray(x, dtype=F32)
    shifted = (x - np.max(x, axis=axis, keepdims=True)).astype(F32)
    exps = cmath.expf(shifted)
    total = np.expand_dims(sequential_sum(exps, axis=axis), axis)
    return (exps / total).astype(F32)


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float = RMS_EPS) -> np.ndarray:
    ss = sequential_sum(x * x)
    ss = F32(ss / F32(x.shape[-1]))
    ss = F32(ss + F32(eps))
    ss = F32(F32(1.0) / np.sqrt(ss))
    return (weight * (ss * x)).astype(F32)


def swiglu(hb: np.ndarray, hb2: np.ndarray, cmath: CMath) -> np.ndarray:
    gate = (F32(1.0) / (F32(1.0) + cmath.expf(-hb))).astype(F32)
    return ((hb * gate) * hb2).astype(F32)


def rope_tables(config: ModelConfig, cmath: CMath) -> tuple[np.ndarray, np.ndarray]:
    """``cosf``/``sinf`` of ``pos * freq`` for every position and every pair of ``dim`` (rows: pos)."""
    head_size = config.head_size
    head_dims = np.arange(0, config.dim, 2) % head_size
    exponents = (head_dims.astype(F32) / F32(head_size)).astype(F32)
    freq = (F32(1.0) / cmath.powf(float(F32(config.rope_theta)), exponents)).astype(F32)
    angles = (np.arange(config.seq_len, dtype=F32)[:, None] * freq[None, :]).astype(F32)
    return cmath.cosf(angles), cmath.sinf(angles)


def rotate(vec: np.ndarray, fcr: np.ndarray, fci: np.ndarray) -> np.ndarray:
    """RoPE on consecutive pairs: ``v0' = v0*fcr - v1*fci``, ``v1' = v0*fci + v1*fcr``."""
    v0, v1 = vec[0::2], vec[1::2]
    out = np.empty_like(vec)
    out[0::2] = v0 * fcr - v1 * fci
    out[1::2] = v0 * fci + v1 * fcr
    return out


# ---------------------------------------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------------------------------------


class Linear(Protocol):
    @property
    def rows(self) -> int: ...

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class Fp32Linear:
    """``out[i] = sum_j W[i][j] * x[j]``, sequential over ``j``."""

    weight: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(sequential_sum(self.weight * x, axis=1))


@dataclass
class GroupLinear:
    """The contract's quantized matmul: exact integer group sums, then sequential over groups of
    ``((float)isum * ws) * xs``."""

    q: np.ndarray  # int32 (rows, cols)
    scales: np.ndarray  # float32 (rows, ngroups)
    group_size: int

    def __post_init__(self) -> None:
        self._starts = np.arange(0, self.q.shape[1], self.group_size)

    @property
    def rows(self) -> int:
        return int(self.q.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        xq, xs = quantize_vector(x, self.group_size)
        isum = np.add.reduceat(self.q * xq.astype(np.int32), self._starts, axis=1, dtype=np.int64)
        terms = (isum.astype(F32) * self.scales) * xs
        return np.ascontiguousarray(sequential_sum(terms.astype(F32), axis=1))


@dataclass
class StackedLinear:
    """Several matmuls of the same input whose outputs are concatenated."""

    parts: Sequence[Linear]

    @property
    def rows(self) -> int:
        return sum(part.rows for part in self.parts)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([part(x) for part in self.parts])


def make_linear(matrix: QuantizedMatrix, layer: int | None = None) -> Linear:
    """The matmul of one matrix (``layer`` selects it from a per-layer stack)."""
    q = matrix.q if layer is None else matrix.q[layer]
    if matrix.qtype == "fp32":
        return Fp32Linear(np.ascontiguousarray(q, dtype=F32))
    assert matrix.scales is not None
    scales = matrix.scales if layer is None else matrix.scales[layer]
    return GroupLinear(q.astype(np.int32), np.ascontiguousarray(scales, dtype=F32), matrix.group_size)


def fuse(parts: Sequence[Linear]) -> Linear:
    """One matmul for several of the same input. Rows are independent, so concatenating the matrices
    gives bit-identical results (a quantized input depends only on ``x`` and the group size)."""
    dense = [part for part in parts if isinstance(part, Fp32Linear)]
    if len(dense) == len(parts):
        return Fp32Linear(np.concatenate([part.weight for part in dense]))
    grouped = [part for part in parts if isinstance(part, GroupLinear)]
    group_sizes = {part.group_size for part in grouped}
    if len(grouped) == len(parts) and len(group_sizes) == 1:
        q = np.concatenate([part.q for part in grouped])
        return GroupLinear(q, np.concatenate([part.scales for part in grouped]), group_sizes.pop())
    return StackedLinear(list(parts))


def embedding_row(matrix: QuantizedMatrix, token: int) -> np.ndarray:
    """A token's embedding; a quantized row is dequantized as ``(float)q[j] * scale``."""
    if matrix.qtype == "fp32":
        return np.array(matrix.q[token], dtype=F32)
    assert matrix.scales is not None
    scales = np.repeat(matrix.scales[token], matrix.group_size)[: matrix.cols]
    return (matrix.q[token].astype(F32) * scales).astype(F32)


# ---------------------------------------------------------------------------------------------------------
# The transformer
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    rms_att: np.ndarray
    qkv: Linear
    wo: Linear
    rms_ffn: np.ndarray
    w13: Linear
    w2: Linear


class Reference:
    """run.c's ``forward`` with a KV cache, per the numeric contract (fp32 or group-quantized matrices).

    ``kv_type`` is the cache's element type (``f32``, ``f16``, ``q8``, ``q16``; ``auto``: a build's default, q16
    for quantized weights, f32 otherwise). For the float types the cache arrays hold what each stored key and
    value reads back as, in float32, so attention itself is the same for every type; q16 keeps the int16 codes
    and attends in integers (llmcu.model.kvq16).
    """

    def __init__(
        self,
        ckpt: Checkpoint,
        plan: dict[str, QuantizedMatrix] | None = None,
        math: str | CMath = "auto",
        kv_type: str = "auto",
        window: tuple[int, int] | None = None,
        seq_len: int | None = None,
    ) -> None:
        # ``seq_len``: a build's context when it is shorter than the model's (its caches and RoPE table); what the
        # model was calibrated with (the q16 scales) stays the checkpoint's.
        self.config = ckpt.config if not seq_len else dataclasses.replace(ckpt.config, seq_len=seq_len)
        # overflow=slide: (sinks, max_steps). The cache keeps the first ``sinks`` positions and a ring of recent ones
        # (slot), and RoPE past the context composes angles as transformer.c's rope_beyond does.
        self.window = window
        self._rope_power: tuple[int, np.ndarray, np.ndarray] | None = None
        self.cmath = math if isinstance(math, CMath) else c_math(math)
        self.plan = self._complete_plan(ckpt, plan or {})
        # auto: what a build on a target with room for any cache gets (llmcu.model.kvcache)
        self.kv_type = check_kv_type(kv_type_candidates(kv_type, any(m.qtype != "fp32" for m in self.plan.values()))[0])
        cfg = self.config
        self.embedding = self.plan["tok_embeddings"]
        self.classifier = make_linear(self.plan["tok_embeddings" if cfg.shared_classifier else "wcls"])
        self.layers = [self._layer(ckpt, layer) for layer in range(cfg.n_layers)]
        self.rms_final = np.asarray(ckpt.weights["rms_final"], dtype=F32)
        self.rope_cos, self.rope_sin = rope_tables(cfg, self.cmath)
        cache_shape = (cfg.n_layers, cfg.seq_len, cfg.kv_dim)
        # q16: the cache holds the int16 codes and attention is integer arithmetic (llmcu.model.kvq16).
        self.q16_scales = kvq16.calibrated_scales(ckpt) if self.kv_type == "q16" else None
        cache_type = np.int16 if self.q16_scales is not None else F32
        self.key_cache = np.zeros(cache_shape, dtype=cache_type)
        self.value_cache = np.zeros(cache_shape, dtype=cache_type)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Checkpoint,
        quant: str = "fp32",
        group_size: int = 32,
        overrides: dict[str, str] | None = None,
        math: str | CMath = "auto",
        kv_type: str = "auto",
        fit: str = DEFAULT_FIT,
        calibration: str = DEFAULT_CALIBRATION,
        window: tuple[int, int] | None = None,
        seq_len: int | None = None,
    ) -> Reference:
        """A reference whose matrices are quantized with ``quant`` (norm weights stay fp32), fitted and
        calibrated as a build with the same options fits them."""
        plan = QuantPlan(quant, group_size, tuple((overrides or {}).items()), fit, calibration)
        return cls.from_plan(ckpt, plan, math=math, kv_type=kv_type, window=window, seq_len=seq_len)

    @classmethod
    def from_plan(
        cls,
        ckpt: Checkpoint,
        plan: QuantPlan,
        tokenizer: object = None,
        math: str | CMath = "auto",
        kv_type: str = "auto",
        window: tuple[int, int] | None = None,
        seq_len: int | None = None,
    ) -> Reference:
        """A reference quantized by ``plan`` (``tokenizer``: for a calibration text file)."""
        matrices = quantize_checkpoint(ckpt, plan, tokenizer)
        return cls(ckpt, matrices, math=math, kv_type=kv_type, window=window, seq_len=seq_len)

    @staticmethod
    def _complete_plan(ckpt: Checkpoint, plan: dict[str, QuantizedMatrix]) -> dict[str, QuantizedMatrix]:
        unknown = sorted(set(plan) - set(MATRIX_KINDS))
        if unknown:
            raise OptionError(f"unknown matrix kind(s) in plan: {', '.join(unknown)}")
        complete = dict(plan)
        for kind in MATRIX_KINDS:
            if kind not in complete and kind in ckpt.weights:
                complete[kind] = QuantizedMatrix("fp32", 0, np.asarray(ckpt.weights[kind], dtype=F32), None)
        return complete

    def _layer(self, ckpt: Checkpoint, layer: int) -> _Layer:
        linear = {kind: make_linear(self.plan[kind], layer) for kind in LAYER_MATRICES}
        return _Layer(
            rms_att=np.asarray(ckpt.weights["rms_att"][layer], dtype=F32),
            qkv=fuse([linear["wq"], linear["wk"], linear["wv"]]),
            wo=linear["wo"],
            rms_ffn=np.asarray(ckpt.weights["rms_ffn"][layer], dtype=F32),
            w13=fuse([linear["w1"], linear["w3"]]),
            w2=linear["w2"],
        )

    def forward(self, token: int, pos: int) -> np.ndarray:
        """The float32 logits after feeding ``token`` at position ``pos`` (positions 0..pos-1 cached)."""
        cfg = self.config
        if not 0 <= token < cfg.vocab_size:
            raise ValueError(f"token {token} outside the vocabulary (0..{cfg.vocab_size - 1})")
        if not 0 <= pos < cfg.seq_len and not (self.window is not None and pos >= 0):
            raise ValueError(f"position {pos} outside the context (0..{cfg.seq_len - 1})")
        x = embedding_row(self.embedding, token)
        for index, layer in enumerate(self.layers):
            x = self._layer_forward(index, layer, x, pos)
        x = rmsnorm(x, self.rms_final, self.config.norm_eps)
        return self.classifier(x)

    @property
    def max_passes(self) -> int:
        """The most forward passes one run makes: the context, or max_steps with a sliding window."""
        return self.window[1] if self.window is not None else self.config.seq_len

    def slot(self, pos: int) -> int:
        """The cache slot of position ``pos`` (transformer.c's kv_slot)."""
        seq_len = self.config.seq_len
        if pos < seq_len or self.window is None:
            return pos
        sinks = self.window[0]
        return sinks + (pos - sinks) % (seq_len - sinks)

    def rope_angles(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """RoPE's cosines and sines at ``pos`` (one per pair of ``dim``): the table's below the context; past it,
        row(r) (x) P_q with B = seq_len - 1, pos = q B + r, P_0 = (1, 0), P_q = P_(q-1) (x) row(B), in float32
        products only (transformer.c's rope_beyond, in the same order of operations)."""
        seq_len = self.config.seq_len
        if pos < seq_len:
            return self.rope_cos[pos], self.rope_sin[pos]
        base = seq_len - 1
        q, r = divmod(pos, base)
        if self._rope_power is None or q < self._rope_power[0]:
            ones = np.ones_like(self.rope_cos[0])
            self._rope_power = (0, ones, np.zeros_like(ones))
        done, power_c, power_s = self._rope_power
        base_c, base_s = self.rope_cos[base], self.rope_sin[base]
        while done < q:
            power_c, power_s = (power_c * base_c - power_s * base_s, power_s * base_c + power_c * base_s)
            done += 1
        self._rope_power = (done, power_c, power_s)
        row_c, row_s = self.rope_cos[r], self.rope_sin[r]
        return (row_c * power_c - row_s * power_s).astype(F32), (row_s * power_c + row_c * power_s).astype(F32)

    def _layer_forward(self, index: int, layer: _Layer, x: np.ndarray, pos: int) -> np.ndarray:
        cfg = self.config
        xb = rmsnorm(x, layer.rms_att, self.config.norm_eps)
        qkv = layer.qkv(xb)
        cos, sin = self.rope_angles(pos)
        q = rotate(qkv[: cfg.dim], cos, sin)
        half = cfg.kv_dim // 2
        k = rotate(qkv[cfg.dim : cfg.dim + cfg.kv_dim], cos[:half], sin[:half])
        v = qkv[cfg.dim + cfg.kv_dim :]
        slot = self.slot(pos)
        if self.q16_scales is not None:
            self.key_cache[index, slot] = kvq16.store(k, self.q16_scales.key[index])
            self.value_cache[index, slot] = kvq16.store(v, self.q16_scales.value[index])
        else:  # rotated in float32, then stored in the cache's element type (read back as float32)
            self.key_cache[index, slot] = stored(k, self.kv_type, cfg.head_size)
            self.value_cache[index, slot] = stored(v, self.kv_type, cfg.head_size)
        x = (x + layer.wo(self._attention(index, q, pos))).astype(F32)
        xb = rmsnorm(x, layer.rms_ffn, self.config.norm_eps)
        h13 = layer.w13(xb)
        hidden = swiglu(h13[: cfg.hidden_dim], h13[cfg.hidden_dim :], self.cmath)
        return (x + layer.w2(hidden)).astype(F32)

    def _attention(self, index: int, q: np.ndarray, pos: int) -> np.ndarray:
        """All heads at once over the occupied slots (in slot order): scores ``(t, head)``, softmax over ``t``,
        weighted sum of values over ``t``."""
        cfg = self.config
        steps = min(pos + 1, cfg.seq_len)
        if self.q16_scales is not None:
            keys, values = self.key_cache[index, :steps], self.value_cache[index, :steps]
            return kvq16.attention(q, keys, values, self.q16_scales, index, cfg.n_kv_heads)
        head_size, kv_mul = cfg.head_size, cfg.n_heads // cfg.n_kv_heads
        keys = self.key_cache[index, :steps].reshape(steps, cfg.n_kv_heads, head_size)
        values = self.value_cache[index, :steps].reshape(steps, cfg.n_kv_heads, head_size)
        keys = np.repeat(keys, kv_mul, axis=1)  # head h reads kv head h // kv_mul
        values = np.repeat(values, kv_mul, axis=1)
        heads = q.reshape(1, cfg.n_heads, head_size)
        return self.cmath.attention(keys, values, heads).reshape(cfg.dim).astype(F32)
