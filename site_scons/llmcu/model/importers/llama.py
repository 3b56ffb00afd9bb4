"""What GGUF and Hugging Face Llama models share: their hyperparameters as a ModelConfig, the checks that llmcu's
runtime can run them, and the rotary layout of the query and key projections.

llama2.c's runtime (and llmcu's) rotates consecutive pairs (q[0], q[1]), (q[2], q[3]), ... of each head, as Meta's
original Llama code does. Hugging Face's Llama rotates the two halves of each head instead, so its q_proj and
k_proj rows are a permutation of Meta's (transformers' conversion script applies it); llama.cpp's converter
undoes it, so GGUF files hold Meta's layout. :func:`hf_to_interleaved` undoes it for safetensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ...core.config import ModelConfig
from ...core.errors import CheckpointError


class ModelImportError(CheckpointError):
    """A GGUF file or Hugging Face folder that llmcu cannot read or run."""


def make_config(
    source: str,
    *,
    dim: int,
    hidden_dim: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    vocab_size: int,
    seq_len: int,
    shared_classifier: bool,
    rope_theta: float,
    norm_eps: float,
    head_dim: int | None = None,
    rope_scaling: Any = None,
) -> ModelConfig:
    """A ModelConfig after the checks the runtime needs; an ModelImportError says what does not fit."""
    values = {"dim": dim, "hidden_dim": hidden_dim, "n_layers": n_layers, "n_heads": n_heads,
              "n_kv_heads": n_kv_heads, "vocab_size": vocab_size, "seq_len": seq_len}  # fmt: skip
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelImportError(f"{source}: {name} is {value!r}, expected a positive integer")
    if dim % n_heads:
        raise ModelImportError(f"{source}: dim {dim} is not a multiple of n_heads {n_heads}")
    if n_heads % n_kv_heads:
        raise ModelImportError(
            f"{source}: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads} (grouped-query attention "
            "needs whole groups)"
        )
    if head_dim is not None and head_dim != dim // n_heads:
        raise ModelImportError(
            f"{source}: head_dim {head_dim} differs from dim / n_heads = {dim // n_heads}; llmcu's runtime (as "
            "llama2.c's) derives the head size from dim and n_heads"
        )
    if (dim // n_heads) % 2:
        raise ModelImportError(f"{source}: head size {dim // n_heads} is odd; RoPE rotates pairs")
    if rope_scaling not in (None, {}, "none") and not (
        isinstance(rope_scaling, Mapping) and rope_scaling.get("type", rope_scaling.get("rope_type")) in (None, "none")
    ):
        raise ModelImportError(
            f"{source}: RoPE scaling {rope_scaling!r} is not supported (llmcu computes plain RoPE with base "
            "rope_theta); use a model without rope_scaling"
        )
    if not (np.isfinite(rope_theta) and rope_theta > 1.0):
        raise ModelImportError(f"{source}: rope_theta {rope_theta!r} is not a RoPE base")
    if not (np.isfinite(norm_eps) and 0.0 < norm_eps < 1.0):
        raise ModelImportError(f"{source}: RMSNorm epsilon {norm_eps!r} is out of range")
    return ModelConfig(dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, shared_classifier,
                       float(rope_theta), float(norm_eps))  # fmt: skip


def hf_to_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Hugging Face's rotate-half row order of a q_proj/k_proj matrix ([n_heads * head_size, dim]) back to the
    interleaved pairs llama2.c rotates: within each head, row ``j`` of the first half and row ``j`` of the second
    half become rows ``2j`` and ``2j + 1``."""
    rows, cols = weight.shape
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def interleaved_to_hf(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of :func:`hf_to_interleaved` (how a Hugging Face Llama stores Meta's weights)."""
    rows, cols = weight.shape
    half = rows // n_heads // 2
    return weight.reshape(n_heads, half, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def stack_layers(
    source: str, per_layer: Iterable[np.ndarray], count: int, shape: tuple[int, ...], name: str
) -> np.ndarray:
    """One layer-stacked float32 tensor of ``count`` layers, filled one layer at a time as ``per_layer`` yields
    them (so that a big model is never held twice), each checked against ``shape``."""
    stacked = np.empty((count, *shape), dtype=np.float32)
    for index, tensor in enumerate(per_layer):
        if tuple(tensor.shape) != shape:
            got = tuple(tensor.shape)
            raise ModelImportError(f"{source}: {name} of layer {index} has shape {got}, expected {shape}")
        stacked[index] = tensor
    return stacked
