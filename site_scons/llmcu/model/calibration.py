"""Calibration: what the inputs of every matrix look like when the fp32 model reads text.

The quantizer (llmcu.model.fitting) spends its error where the activations do not look: a weight that multiplies an
input channel which is usually near zero can be rounded coarsely, one whose channel is large cannot. What it needs
is, per matrix, the second moment of its input, ``H = E[x x^T]`` (GPTQ's Hessian; its diagonal is llama.cpp's
importance matrix). :func:`collect` runs the fp32 model over token sequences and accumulates ``H`` for each
input a matrix reads: the attention norm's output (``wq``, ``wk``, ``wv``), the attention output (``wo``), the
FFN norm's output (``w1``, ``w3``), the SwiGLU output (``w2``) and the final norm's output (the classifier, and
so ``tok_embeddings`` when it is shared).

Where the text comes from:

- ``sampled`` (the default): the fp32 model's own stories, sampled at temperature 1 from BOS with a fixed seed.
  No file, no network, no tokenizer; deterministic; in the model's own distribution. Quality is evaluated on
  other text: greedy continuations of fixed prompts (llmcu.model.quality), which sampling from BOS does not produce.
- a UTF-8 text file (``calib=PATH``): encoded with the model's tokenizer, cut into sequences of the context.

The forward pass here is a batch of sequences at a time, not the numeric contract's sequential sums
(llmcu.model.reference): its figures steer the quantizer and are never compared bit for bit, and a batch makes a
stories15M-shaped calibration take seconds instead of minutes. But they decide bytes in the image (codes, scales,
the q16 KV cache's scales), so every product and function is llmcu.model.portable's: BLAS on exact integer sums and
elementwise IEEE arithmetic, the same bits on every CPU whatever BLAS kernels it picks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import ModelConfig
from ..core.errors import QuantizationError
from . import portable
from .checkpoint import Checkpoint

SAMPLED = "sampled"
NONE = "none"
SEED = 20261204
# Stories sampled side by side, and how long each may grow (the context caps it): 16 x 128 = 2048 tokens,
# after which the statistics of stories260K and stories15M no longer move the quantizer's choices. A wide
# batch and short stories: each step's matmuls cost about the same for 8 rows as for 16.
SEQUENCES = 16
STEPS = 128
BOS = 1
# Models up to this many weights keep their matrices prepared for llmcu.model.portable's products (8 bytes each).
KEEP_FIXED_WEIGHTS = 200_000_000
# Which recorded input each matrix kind reads.
INPUTS = frozenset({"attn_in", "attn_out", "ffn_in", "ffn_hidden", "final"})
INPUT_OF = {
    "wq": "attn_in",
    "wk": "attn_in",
    "wv": "attn_in",
    "wo": "attn_out",
    "w1": "ffn_in",
    "w3": "ffn_in",
    "w2": "ffn_hidden",
    "wcls": "final",
    "tok_embeddings": "final",
}


@dataclass
class Calibration:
    """Per input (and layer), ``sum x x^T`` in float64 and how many vectors went in; ``source`` says what
    text made it."""

    source: str
    tokens: int
    totals: dict[str, list[np.ndarray]]
    sequences: list[list[int]]  # the token sequences it read (sampled ones included), to read them again
    key_absmax: np.ndarray | None = None  # (n_layers, kv_dim): the largest |key| (after RoPE) of each channel
    value_absmax: np.ndarray | None = None  # the same for the values (what kv_type=q16's scales come from)

    def hessian(self, kind: str, layer: int | None = None) -> np.ndarray:
        """``H = E[x x^T]`` of the input matrix ``kind`` reads (``layer`` for per-layer matrices)."""
        if INPUT_OF[kind] not in self.totals:
            raise QuantizationError(f"calibration recorded no {INPUT_OF[kind]} input, which {kind} reads")
        per_layer = self.totals[INPUT_OF[kind]]
        return per_layer[0 if layer is None else layer] / max(self.tokens, 1)

    def importance(self, kind: str, layer: int | None = None) -> np.ndarray:
        """The diagonal of ``H``: each input channel's mean square (llama.cpp's importance matrix)."""
        return np.diag(self.hessian(kind, layer)).copy()


def _rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * weight).astype(np.float32)


def _rope(vec: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """RoPE on consecutive pairs of the last axis (``cos``/``sin``: one per pair)."""
    v0, v1 = vec[..., 0::2], vec[..., 1::2]
    out = np.empty_like(vec)
    out[..., 0::2] = v0 * cos - v1 * sin
    out[..., 1::2] = v0 * sin + v1 * cos
    return out


class _BatchModel:
    """The fp32 transformer over a batch of sequences, one position at a time, recording each matmul input."""

    def __init__(
        self, ckpt: Checkpoint, batch: int, steps: int, record: bool = True, inputs: frozenset[str] = INPUTS
    ) -> None:
        cfg: ModelConfig = ckpt.config
        self.recording = record
        self.cfg, self.w = cfg, ckpt.weights
        self.classifier = self.w["tok_embeddings"] if cfg.shared_classifier else self.w["wcls"]
        self.key = np.zeros((cfg.n_layers, batch, steps, cfg.kv_dim), dtype=np.float32)
        self.value = np.zeros_like(self.key)
        self.key_absmax = np.zeros((cfg.n_layers, cfg.kv_dim), dtype=np.float32)
        self.value_absmax = np.zeros_like(self.key_absmax)
        # Only the inputs asked for: a 1B model's hidden-state moments alone are gigabytes.
        width = {"ffn_hidden": cfg.hidden_dim}
        self.totals = {
            name: [np.zeros((width.get(name, cfg.dim),) * 2) for _ in range(1 if name == "final" else cfg.n_layers)]
            for name in sorted(inputs)
        }
        self.pending: dict[tuple[str, int], list[np.ndarray]] = {}
        self.fixed: dict[tuple[str, int], portable.FixedMatrix] = {}
        # The prepared matrices take 8 bytes a weight: kept up to stories110M's size, made again each time above.
        self.keep_fixed = sum(np.size(v) for v in self.w.values()) <= KEEP_FIXED_WEIGHTS
        head_dims = np.arange(0, cfg.dim, 2) % cfg.head_size
        self.freq = (1.0 / portable.power(cfg.rope_theta, head_dims / cfg.head_size)).astype(np.float32)

    def matmul(self, x: np.ndarray, name: str, layer: int = 0) -> np.ndarray:
        """``x @ W.T`` (float32) for the matrix ``name`` (of ``layer``), portably (llmcu.model.portable)."""
        fixed = self.fixed.get((name, layer))
        if fixed is None:
            matrix = self.classifier if name == "classifier" else self.w[name][layer]
            fixed = portable.FixedMatrix.of_rows(matrix)
            if self.keep_fixed:
                self.fixed[name, layer] = fixed
        return portable.fixed_matmul(x, fixed).astype(np.float32)

    def _record(self, name: str, layer: int, x: np.ndarray, active: np.ndarray) -> None:
        if not self.recording or name not in self.totals:
            return
        self.pending.setdefault((name, layer), []).append(x[active])
        if len(self.pending[name, layer]) == 32:
            self.flush(name, layer)

    def flush(self, name: str | None = None, layer: int = 0) -> None:
        """Adds the recorded rows into the sums: a few large products instead of one per step."""
        for key in [(name, layer)] if name is not None else list(self.pending):
            rows = np.concatenate(self.pending.pop(key)).astype(np.float64)
            self.totals[key[0]][key[1]] += portable.gram(rows)

    def step(self, tokens: np.ndarray, pos: int, active: np.ndarray) -> np.ndarray:
        """Logits (batch, vocab) after feeding ``tokens`` at ``pos``; only ``active`` rows are recorded."""
        cfg, w = self.cfg, self.w
        hs, kv_mul = cfg.head_size, cfg.n_heads // cfg.n_kv_heads
        batch = tokens.shape[0]
        x = w["tok_embeddings"][tokens].astype(np.float32)
        cos, sin = (part.astype(np.float32) for part in portable.cos_sin(pos * self.freq))
        for layer in range(cfg.n_layers):
            xb = _rmsnorm(x, w["rms_att"][layer], cfg.norm_eps)
            self._record("attn_in", layer, xb, active)
            q = _rope(self.matmul(xb, "wq", layer), cos, sin)
            self.key[layer, :, pos] = _rope(
                self.matmul(xb, "wk", layer), cos[: cfg.kv_dim // 2], sin[: cfg.kv_dim // 2]
            )
            self.value[layer, :, pos] = self.matmul(xb, "wv", layer)
            if self.recording and active.any():
                for absmax, cache in ((self.key_absmax, self.key), (self.value_absmax, self.value)):
                    np.maximum(absmax[layer], np.abs(cache[layer, active, pos]).max(axis=0), out=absmax[layer])
            keys = self.key[layer, :, : pos + 1].reshape(batch, pos + 1, cfg.n_kv_heads, hs)
            values = self.value[layer, :, : pos + 1].reshape(batch, pos + 1, cfg.n_kv_heads, hs)
            heads = q.reshape(batch, cfg.n_kv_heads, kv_mul, hs)
            scores = portable.fixed_matmul(heads, keys.transpose(0, 2, 3, 1)).astype(np.float32)
            scores = portable.softmax(scores / np.float32(np.sqrt(hs)))
            attended = portable.fixed_matmul(scores, values.transpose(0, 2, 1, 3))
            attended = attended.reshape(batch, cfg.dim).astype(np.float32)
            self._record("attn_out", layer, attended, active)
            x = x + self.matmul(attended, "wo", layer)
            xb = _rmsnorm(x, w["rms_ffn"][layer], cfg.norm_eps)
            self._record("ffn_in", layer, xb, active)
            h1, h3 = self.matmul(xb, "w1", layer), self.matmul(xb, "w3", layer)
            hidden = (h1 / (1.0 + portable.exp(-h1)) * h3).astype(np.float32)
            self._record("ffn_hidden", layer, hidden, active)
            x = x + self.matmul(hidden, "w2", layer)
        final = _rmsnorm(x, w["rms_final"], cfg.norm_eps)
        self._record("final", 0, final, active)
        return self.matmul(final, "classifier")


def collect(
    ckpt: Checkpoint,
    sequences: Sequence[Sequence[int]] | None = None,
    *,
    source: str = SAMPLED,
    progress: Callable[[int], None] | None = None,
    inputs: frozenset[str] = INPUTS,
) -> Calibration:
    """Run the fp32 model and record the moments of ``inputs`` (all by default; the keys' and values' ranges
    always): over ``sequences`` (teacher-forced), or, with ``sequences`` None, over :data:`SEQUENCES` stories it
    samples itself from BOS (temperature 1)."""
    cfg = ckpt.config
    if sequences is not None:
        sequences = [list(s[: cfg.seq_len]) for s in sequences if len(s)]
        if not sequences:
            raise QuantizationError("calibration got no tokens")
        batch, steps = len(sequences), max(len(s) for s in sequences)
    else:
        batch, steps = SEQUENCES, min(STEPS, cfg.seq_len)
    model = _BatchModel(ckpt, batch, steps, inputs=inputs)
    rng = np.random.default_rng(SEED)
    tokens = np.full(batch, BOS, dtype=np.int64)
    active = np.ones(batch, dtype=bool)
    seen = 0
    history = [[] for _ in range(batch)]
    with np.errstate(over="ignore"):
        for pos in range(steps):
            if sequences is not None:
                active = np.array([pos < len(s) for s in sequences])
                tokens = np.array([s[pos] if pos < len(s) else 0 for s in sequences], dtype=np.int64)
            if not active.any():
                break
            logits = model.step(tokens, pos, active)
            for row in np.flatnonzero(active):
                history[row].append(int(tokens[row]))
            seen += int(active.sum())
            if progress is not None:
                progress(int(active.sum()))
            if sequences is None:
                probs = portable.softmax(logits)
                draws = rng.random(batch)
                nxt = np.minimum((probs.cumsum(axis=-1) < draws[:, None]).sum(axis=-1), cfg.vocab_size - 1)
                active &= nxt != BOS  # a story ends where the model starts the next one
                tokens = nxt
    model.flush()
    label = f"sampled: {batch} fp32 stories from BOS, seed {SEED}" if sequences is None else source
    return Calibration(label, seen, model.totals, history, model.key_absmax, model.value_absmax)


def log_probs(ckpt: Checkpoint, sequences: Sequence[Sequence[int]], max_tokens: int = 1024) -> np.ndarray:
    """The model's next-token log-probabilities (float32, one row per position) over ``sequences`` read
    teacher-forced, up to ``max_tokens`` positions in all: what llmcu.builder.autoquant compares mixes by."""
    kept, budget = [], max_tokens
    for sequence in sequences:
        if budget <= 0:
            break
        kept.append(list(sequence[: min(budget, ckpt.config.seq_len)]))
        budget -= len(kept[-1])
    kept = [s for s in kept if s]
    if not kept:
        raise QuantizationError("calibration got no tokens")
    model = _BatchModel(ckpt, len(kept), max(len(s) for s in kept), record=False)
    rows = []
    with np.errstate(over="ignore"):
        for pos in range(max(len(s) for s in kept)):
            active = np.array([pos < len(s) for s in kept])
            tokens = np.array([s[pos] if pos < len(s) else 0 for s in kept], dtype=np.int64)
            logits = model.step(tokens, pos, active)[active]
            rows.append(portable.log_softmax(logits).astype(np.float32))
    return np.concatenate(rows)


def greedy(ckpt: Checkpoint, prompt: Sequence[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """The fp32 model's greedy run from ``prompt`` in this module's arithmetic: the tokens fed (``steps`` of
    them, fewer if it starts a new story) and the logits after each. Not the contract's sums: for figures
    that compare distributions, where a last-bit difference does not matter."""
    model = _BatchModel(ckpt, 1, steps, record=False)
    tokens, logits = [int(prompt[0])], []
    with np.errstate(over="ignore"):
        for pos in range(steps):
            out = model.step(np.array([tokens[pos]], dtype=np.int64), pos, np.ones(1, dtype=bool))[0]
            logits.append(out.astype(np.float32))
            following = int(prompt[pos + 1]) if pos + 1 < len(prompt) else int(np.argmax(out))
            if pos + 1 >= len(prompt) and following == BOS:
                break
            tokens.append(following)
    return tokens[: len(logits)], logits


def mean_kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over positions of KL(reference || candidate), both log-probabilities."""
    p = reference.astype(np.float64)
    return float(np.mean(np.sum(portable.exp(p) * (p - candidate.astype(np.float64)), axis=-1)))


def text_sequences(path: Path, seq_len: int, tokenizer: object) -> list[list[int]]:
    """A UTF-8 text file encoded with the model's tokenizer, cut into sequences of the context length."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise QuantizationError(f"calibration text {path}: cannot be read ({error.strerror or error})") from None
    if b"\x00" in raw:
        raise QuantizationError(f"calibration text {path}: is not text (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise QuantizationError(
            f"calibration text {path}: is not UTF-8 text (bad byte at offset {error.start})"
        ) from None
    if not text.strip():
        raise QuantizationError(f"calibration text {path}: is empty; give a text of a few hundred words")
    ids = list(tokenizer.encode(text, bos=True, eos=False))  # type: ignore[attr-defined]
    if len(ids) < 16:
        raise QuantizationError(f"calibration text {path}: only {len(ids)} tokens; give a few hundred words")
    return [ids[start : start + seq_len] for start in range(0, len(ids), seq_len)]


_MEMO: dict[tuple[str, str], list[Calibration]] = {}


def weights_digest(ckpt: Checkpoint) -> str:
    """A hash of the model's tensors: what a calibration belongs to."""
    digest = hashlib.sha256(repr(ckpt.config).encode())
    for name in sorted(ckpt.weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(ckpt.weights[name], dtype=np.float32).tobytes())
    return digest.hexdigest()


def calibrate(
    ckpt: Checkpoint,
    source: str = SAMPLED,
    tokenizer: object = None,
    show_progress: bool = False,
    digest: str | None = None,
    inputs: frozenset[str] = INPUTS,
) -> Calibration | None:
    """The calibration ``source`` names: ``sampled``, ``none`` (None) or a text file's path (which needs the
    ``tokenizer``), recording ``inputs`` (all by default; an empty set for only the KV ranges). Remembered per model
    and source for the rest of the process, where one that recorded more serves too (``digest``: the model's
    :func:`weights_digest` when the caller has it already)."""
    if source == NONE:
        return None
    key = (digest or weights_digest(ckpt), source)
    for known in _MEMO.get(key, []):
        if inputs <= known.totals.keys():
            return known
    sequences = None
    if source != SAMPLED:
        if tokenizer is None:
            raise QuantizationError(f"calibration text {source}: needs the model's tokenizer")
        sequences = text_sequences(Path(source), ckpt.config.seq_len, tokenizer)
    total = sum(len(s) for s in sequences) if sequences else SEQUENCES * min(STEPS, ckpt.config.seq_len)
    bar = _progress_bar(total) if show_progress else None
    try:
        result = collect(ckpt, sequences, source=f"text file {Path(source).name}", progress=bar.update if bar else None,
                         inputs=inputs)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    _MEMO.setdefault(key, []).append(result)
    return result


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="calibrating", unit="tok", leave=False, dynamic_ncols=True)
