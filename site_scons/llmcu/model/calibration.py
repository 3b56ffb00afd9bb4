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

The forward pass here is a batch of sequences at a time in plain BLAS float32 (``X @ W.T``), not the numeric
contract's sequential sums (llmcu.model.reference): its figures steer the quantizer and are never compared bit for
bit, and a batch makes a stories15M-shaped calibration take seconds instead of minutes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import ModelConfig
from ..core.errors import QuantizationError
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
        head_dims = np.arange(0, cfg.dim, 2) % cfg.head_size
        self.freq = (1.0 / cfg.rope_theta ** (head_dims / cfg.head_size)).astype(np.float32)

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
            self.totals[key[0]][key[1]] += rows.T @ rows

    def step(self, tokens: np.ndarray, pos: int, active: np.ndarray) -> np.ndarray:
        """Logits (batch, vocab) after feeding ``tokens`` at ``pos``; only ``active`` rows are recorded."""
        cfg, w = self.cfg, self.w
        hs, kv_mul = cfg.head_size, cfg.n_heads // cfg.n_kv_heads
        batch = tokens.shape[0]
        x = w["tok_embeddings"][tokens].astype(np.float32)
        cos, sin = np.cos(pos * self.freq), np.sin(pos * self.freq)
        for layer in range(cfg.n_layers):
            xb = _rmsnorm(x, w["rms_att"][layer], cfg.norm_eps)
            self._record("attn_in", layer, xb, active)
            q = _rope(xb @ w["wq"][layer].T, cos, sin)
            self.key[layer, :, pos] = _rope(xb @ w["wk"][layer].T, cos[: cfg.kv_dim // 2], sin[: cfg.kv_dim // 2])
            self.value[layer, :, pos] = xb @ w["wv"][layer].T
            if self.recording and active.any():
                for absmax, cache in ((self.key_absmax, self.key), (self.value_absmax, self.value)):
                    np.maximum(absmax[layer], np.abs(cache[layer, active, pos]).max(axis=0), out=absmax[layer])
            keys = self.key[layer, :, : pos + 1].reshape(batch, pos + 1, cfg.n_kv_heads, hs)
            values = self.value[layer, :, : pos + 1].reshape(batch, pos + 1, cfg.n_kv_heads, hs)
            heads = q.reshape(batch, cfg.n_kv_heads, kv_mul, hs)
            scores = np.einsum("bkmd,btkd->bkmt", heads, keys) / np.float32(np.sqrt(hs))
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = np.einsum("bkmt,btkd->bkmd", scores, values).reshape(batch, cfg.dim).astype(np.float32)
            self._record("attn_out", layer, attended, active)
            x = x + attended @ w["wo"][layer].T
            xb = _rmsnorm(x, w["rms_ffn"][layer], cfg.norm_eps)
            self._record("ffn_in", layer, xb, active)
            h1, h3 = xb @ w["w1"][layer].T, xb @ w["w3"][layer].T
            hidden = (h1 / (1.0 + np.exp(-h1)) * h3).astype(np.float32)
            self._record("ffn_hidden", layer, hidden, active)
            x = x + hidden @ w["w2"][layer].T
        final = _rmsnorm(x, w["rms_final"], cfg.norm_eps)
        self._record("final", 0, final, active)
        return final @ self.classifier.T


def _softmax(logits: np.ndarray) -> np.ndarray:
    wide = logits.astype(np.float64)
    wide = np.exp(wide - wide.max(axis=-1, keepdims=True))
    return wide / wide.sum(axis=-1, keepdims=True)


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
                probs = _softmax(logits)
                draws = rng.random(batch)
                nxt = np.minimum((probs.cumsum(axis=-1) < draws[:, None]).sum(axis=-1), cfg.vocab_size - 1)
                active &= nxt != BOS  # a story ends where the model starts the next one
                tokens = nxt
    model.flush()
    label = f"sampled: {batch} fp32 stories from BOS, seed {SEED}" if sequences is None else source
    return Calibration(label, seen, model.totals, history, model.key_absmax, model.value_absmax)


def log_probs(ckpt: Checkpoint, sequences: Sequence[Sequence[int]], max_tokens: int = 1024) -> np.ndarray:
    """The model's next-token log-probabilities (float32, one row per position) over ``sequences`` read
    teacher-forced, up to ``max_tokens`` positions in all: what llmcu.build.autoquant compares mixes by."""
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
            logits = model.step(tokens, pos, active)[active].astype(np.float64)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            rows.append((shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32))
    return np.concatenate(rows)


def greedy(ckpt: Checkpoint, prompt: Sequence[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """The fp32 model's greedy run from ``prompt`` in float32 BLAS (one sequence): the tokens fed (``steps`` of
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
    return float(np.mean(np.sum(np.exp(p) * (p - candidate.astype(np.float64)), axis=-1)))


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
