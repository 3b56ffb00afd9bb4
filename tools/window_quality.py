#!/usr/bin/env python3
"""How much text quality a sliding window (overflow=slide) costs, and which RoPE positions keep it better.

tools/window_quality.py [--model 260k] [--windows 32,64,128] [--sinks 0,4] [--texts 3] [--json out.json]

The teacher text is the fp32 model's own: stories of the model's whole context sampled from BOS (fixed seeds).
Every variant is fed the same tokens (teacher forcing) and compared with the full-context fp32 run at every
position past the window: top-1 agreement (the same most likely next token) and the mean KL divergence of its
next-token distribution from the full context's. Variants: the window size (the cache's positions), the
attention sinks kept, and the RoPE positions:

- ``absolute``: what llmcu's runtime does. Keys keep the rotation of their absolute position; the query is rotated
  by its own. The distance between the query and a recent key is the true one; to a sink it keeps growing.
- ``cache``: StreamingLLM's choice. Positions are re-assigned inside the cache (the sinks 0..S-1, the ring in
  order after them, the query last), so every distance stays below the window; keys must be stored unrotated and
  rotated again at every step, which costs a rotation per cached key and head per token.

The arithmetic is float64 numpy (a measure of the text, not of bits).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from llmcu.core.fileio import write_text_atomic
from llmcu.core.paths import MODELS_DIR
from llmcu.model import models
from llmcu.model.sources import read_model, read_vocab


class Model:
    """A float64 Llama forward over a whole token sequence, with the cache policy of each variant."""

    def __init__(self, ckpt) -> None:
        cfg = ckpt.config
        self.cfg = cfg
        self.w = {name: np.asarray(value, dtype=np.float64) for name, value in ckpt.weights.items()}
        head_dims = np.arange(0, cfg.head_size, 2)
        self.freq = 1.0 / cfg.rope_theta ** (head_dims / cfg.head_size)

    def _rms(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.cfg.norm_eps) * weight

    def _rotate(self, v: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """RoPE on (..., n, heads, head_size) by each row's position."""
        angles = positions[:, None] * self.freq[None, :]  # (n, head_size / 2)
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        v0, v1 = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = v0 * cos - v1 * sin
        out[..., 1::2] = v0 * sin + v1 * cos
        return out

    def logits(self, tokens: list[int], window: int = 0, sinks: int = 0, positions: str = "absolute") -> np.ndarray:
        """Next-token logits after each token; ``window`` 0 is the whole context."""
        cfg, w = self.cfg, self.w
        n, hs, kv_heads = len(tokens), cfg.head_size, cfg.n_kv_heads
        x = w["tok_embeddings"][tokens]
        pos = np.arange(n, dtype=np.float64)
        # which earlier positions each position attends to: all, or the sinks and the most recent ones
        visible = np.tril(np.ones((n, n), dtype=bool))
        if window:
            recent = window - sinks
            for t in range(n):
                if t >= window:
                    visible[t, sinks : t - recent + 1] = False
        out = np.empty((n, cfg.vocab_size))
        for layer in range(cfg.n_layers):
            xb = self._rms(x, w["rms_att"][layer])
            q = (xb @ w["wq"][layer].T).reshape(n, cfg.n_heads, hs)
            k = (xb @ w["wk"][layer].T).reshape(n, kv_heads, hs)
            v = (xb @ w["wv"][layer].T).reshape(n, kv_heads, hs)
            k = np.repeat(k, cfg.n_heads // kv_heads, axis=1)
            v = np.repeat(v, cfg.n_heads // kv_heads, axis=1)
            att_out = np.empty((n, cfg.n_heads, hs))
            if positions == "absolute" or not window:
                qr, kr = self._rotate(q, pos), self._rotate(k, pos)
                scores = np.einsum("thd,shd->hts", qr, kr) / np.sqrt(hs)
                scores = np.where(visible[None], scores, -np.inf)
                weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
                weights /= weights.sum(axis=-1, keepdims=True)
                att_out = np.einsum("hts,shd->thd", weights, v)
            else:  # positions re-assigned inside the cache at every step
                for t in range(n):
                    keep = np.flatnonzero(visible[t])
                    cache_pos = np.arange(len(keep), dtype=np.float64)
                    qr = self._rotate(q[t : t + 1], cache_pos[-1:])[0]
                    kr = self._rotate(k[keep], cache_pos)
                    scores = np.einsum("hd,shd->hs", qr, kr) / np.sqrt(hs)
                    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
                    weights /= weights.sum(axis=-1, keepdims=True)
                    att_out[t] = np.einsum("hs,shd->hd", weights, v[keep])
            x = x + att_out.reshape(n, cfg.dim) @ w["wo"][layer].T
            xb = self._rms(x, w["rms_ffn"][layer])
            h1, h3 = xb @ w["w1"][layer].T, xb @ w["w3"][layer].T
            x = x + ((h1 / (1 + np.exp(-h1))) * h3) @ w["w2"][layer].T
        x = self._rms(x, w["rms_final"])
        out[:] = x @ (w["tok_embeddings"] if cfg.shared_classifier else w["wcls"]).T
        return out


def sample_text(model: Model, length: int, seed: int) -> list[int]:
    """A story of ``length`` tokens the full-context model samples from BOS (temperature 1)."""
    rng = np.random.default_rng(seed)
    tokens = [1]
    while len(tokens) < length:
        logits = model.logits(tokens)[-1]
        p = np.exp(logits - logits.max())
        tokens.append(int(rng.choice(len(p), p=p / p.sum())))
    return tokens


def compare(full: np.ndarray, other: np.ndarray, start: int) -> tuple[float, float]:
    """top-1 agreement and mean KL(full || other) over positions start..end."""
    a, b = full[start:], other[start:]
    top1 = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    pa = np.exp(a - a.max(axis=1, keepdims=True))
    pa /= pa.sum(axis=1, keepdims=True)
    log_pa = np.log(pa)
    log_pb = b - b.max(axis=1, keepdims=True)
    log_pb -= np.log(np.exp(log_pb).sum(axis=1, keepdims=True))
    return top1, float(np.mean(np.sum(pa * (log_pa - log_pb), axis=1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="260k")
    parser.add_argument("--windows", default="32,64,128")
    parser.add_argument("--sinks", default="0,4")
    parser.add_argument("--texts", type=int, default=3)
    parser.add_argument("--length", type=int, default=0, help="tokens per text (0: the model's context)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    resolved = models.resolve_model(args.model, None, MODELS_DIR)
    ckpt = read_model(resolved.checkpoint)
    read_vocab(resolved.tokenizer, ckpt.config.vocab_size)
    model = Model(ckpt)
    length = args.length or ckpt.config.seq_len
    texts = [sample_text(model, length, seed) for seed in range(args.texts)]
    fulls = [model.logits(text) for text in texts]
    rows = []
    for window in (int(w) for w in args.windows.split(",")):
        for sinks in (int(s) for s in args.sinks.split(",")):
            for positions in ("absolute", "cache"):
                scores = [compare(full, model.logits(text, window, sinks, positions), window)
                          for text, full in zip(texts, fulls, strict=True)]  # fmt: skip
                top1 = float(np.mean([s[0] for s in scores]))
                kl = float(np.mean([s[1] for s in scores]))
                rows.append({"window": window, "sinks": sinks, "positions": positions, "top1": top1, "mean_kl": kl})
                print(f"window {window:4d} sinks {sinks} {positions:8s}: top-1 {top1:.3f}, mean KL {kl:.4f}")
    lines = [
        f"Teacher-forced on {args.texts} stories of {length} tokens sampled by the fp32 model, against its full "
        "context, at the positions past the window:",
        "",
        "| window | sinks | RoPE positions | top-1 agreement | mean KL |",
        "|---:|---:|---|---:|---:|",
        *[f"| {r['window']} | {r['sinks']} | {r['positions']} | {r['top1']:.3f} | {r['mean_kl']:.4f} |" for r in rows],
    ]
    print("\n".join(lines))
    if args.json:
        write_text_atomic(args.json, json.dumps({"model": args.model, "length": length, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
