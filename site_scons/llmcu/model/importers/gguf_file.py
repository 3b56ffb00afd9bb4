"""GGUF files (llama.cpp's format) of the ``llama`` architecture, read with the ``gguf`` package.

The hyperparameters come from the ``llama.*`` keys (context length, embedding and feed-forward sizes, heads and
key/value heads, ``rope.freq_base``, ``attention.layer_norm_rms_epsilon``), the tensors from llama.cpp's names
(``token_embd``, ``blk.N.attn_q`` ...), already in llama2.c's interleaved rotary layout. F32, F16 and BF16 tensors
are read as they are; quantized ones (Q8_0, Q4_0, the K-quants, ...) are dequantized to float32 with the gguf
package's reference code, and the checkpoint's ``extra["notes"]`` says which: a q8 (Q8_0) or q4 (Q4_0) build at
group_size=32 keeps their codes and scales exactly, any other build quantizes them again.
The vocabulary (``tokenizer.ggml.*``) becomes a llama2.c tokenizer in llmcu.model.importers.vocab.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ...core.config import ModelConfig
from ..checkpoint import Checkpoint
from .llama import ModelImportError, make_config, stack_layers

FLOAT_TYPES = ("F32", "F16", "BF16")
KEPT_TYPES = {"Q8_0": "q8", "Q4_0": "q4"}  # block types that are llmcu groups of 32 (quantize.keeps_stored_codes)
GGUF_LAYER_MATRICES = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output", "w1": "ffn_gate",
                       "w2": "ffn_down", "w3": "ffn_up"}  # fmt: skip


def open_reader(path: str | Path) -> Any:
    """gguf.GGUFReader on ``path``; a truncated or corrupt file is a ModelImportError."""
    try:
        import gguf
    except ImportError:
        raise ModelImportError("reading GGUF needs the gguf package: pip install gguf (tools/setup.sh)") from None
    try:
        return gguf.GGUFReader(str(path), "r")
    except (ValueError, IndexError, KeyError, OSError, struct.error, OverflowError, MemoryError) as error:
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        raise ModelImportError(
            f"{path}: not a readable GGUF file, truncated or corrupt ({size:,} bytes; {type(error).__name__}: {error})"
        ) from None


def field_value(reader: Any, key: str, default: Any = None) -> Any:
    """A metadata value (a number, a string, or a list of them), or ``default``."""
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        value = field.contents()
    except (IndexError, ValueError, UnicodeDecodeError) as error:
        raise ModelImportError(f"metadata {key} cannot be read ({error})") from None
    return value


def _config(reader: Any, source: str) -> tuple[ModelConfig, dict[str, Any]]:
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        raise ModelImportError(f"{source}: architecture {arch!r}; llmcu runs the llama architecture only")

    def key(name: str, default: Any = None, required: bool = True) -> Any:
        value = field_value(reader, f"llama.{name}", default)
        if value is None and required:
            raise ModelImportError(f"{source}: metadata llama.{name} is missing")
        return value

    tensors = {tensor.name: tensor for tensor in reader.tensors}
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    vocab_size = key("vocab_size", len(tokens) if tokens else None)
    scaling = key("rope.scaling.type", None, required=False)
    n_heads = key("attention.head_count")
    cfg = make_config(
        source,
        dim=key("embedding_length"),
        hidden_dim=key("feed_forward_length"),
        n_layers=key("block_count"),
        n_heads=n_heads,
        n_kv_heads=key("attention.head_count_kv", n_heads),
        vocab_size=vocab_size,
        seq_len=key("context_length"),
        shared_classifier="output.weight" not in tensors,
        rope_theta=float(key("rope.freq_base", 10000.0)),
        norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
        head_dim=key("rope.dimension_count", None, required=False),
        rope_scaling={"type": scaling} if scaling and scaling != "none" else None,
    )
    return cfg, tensors


def config_of_gguf(path: Path) -> ModelConfig:
    """The model's hyperparameters from the metadata (the tensors are not read)."""
    return _config(open_reader(path), str(path))[0]


def read_gguf(path: str | Path) -> Checkpoint:
    """The file's model as a Checkpoint (float32, llama2.c's shapes)."""
    path = Path(path)
    source = str(path)
    cfg, tensors = _config(open_reader(path), source)
    dequantized: Counter[str] = Counter()
    types: dict[str, set[str]] = {}  # llmcu's tensor kind -> the GGUF types its tensors have

    def tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
        found = tensors.get(name)
        if found is None:
            raise ModelImportError(f"{source}: tensor {name} is missing")
        got = tuple(int(n) for n in reversed(found.shape))  # GGUF lists the fastest dimension first
        while len(got) > len(shape) and got[0] == 1:
            got = got[1:]
        if got != shape:
            raise ModelImportError(f"{source}: {name} has shape {got}, expected {shape}")
        kind = found.tensor_type.name
        try:
            if kind in FLOAT_TYPES:
                raw = np.asarray(found.data)
                values = ((raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32) if kind == "BF16"
                          else raw.astype(np.float32))  # fmt: skip
            else:
                from gguf import quants

                values = quants.dequantize(np.asarray(found.data), found.tensor_type)
                dequantized[kind] += 1
        except (NotImplementedError, ValueError, TypeError) as error:
            raise ModelImportError(f"{source}: tensor {name} of type {kind} cannot be read ({error})") from None
        values = np.asarray(values, dtype=np.float32)
        if values.size != int(np.prod(shape)):
            raise ModelImportError(f"{source}: {name} holds {values.size} values, expected {int(np.prod(shape))}")
        return values.reshape(shape)

    d, v = cfg.dim, cfg.vocab_size
    layers = range(cfg.n_layers)

    def per_layer(part: str, shape: tuple[int, ...]) -> np.ndarray:
        values = (tensor(f"blk.{i}.{part}.weight", shape) for i in layers)
        return stack_layers(source, values, cfg.n_layers, shape, part)

    def kind_types(kind: str, names: list[str]) -> None:
        types[kind] = {tensors[name].tensor_type.name for name in names if name in tensors}

    shapes = cfg.tensor_shapes()  # per layer: without the leading n_layers
    weights = {
        "tok_embeddings": tensor("token_embd.weight", (v, d)),
        "rms_att": per_layer("attn_norm", (d,)),
        "rms_ffn": per_layer("ffn_norm", (d,)),
        **{kind: per_layer(part, shapes[kind][1:]) for kind, part in GGUF_LAYER_MATRICES.items()},
        "rms_final": tensor("output_norm.weight", (d,)),
    }
    if not cfg.shared_classifier:
        weights["wcls"] = tensor("output.weight", (v, d))
    weights = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()}
    kind_types("tok_embeddings", ["token_embd.weight"])
    for kind, part in GGUF_LAYER_MATRICES.items():
        kind_types(kind, [f"blk.{i}.{part}.weight" for i in layers])
    if not cfg.shared_classifier:
        kind_types("wcls", ["output.weight"])
    stored = {kind: found.pop() for kind, found in types.items() if len(found) == 1 and found <= KEPT_TYPES.keys()}
    notes = [
        f"{count} {kind} tensor{'s' if count > 1 else ''} dequantized to float32; "
        + (f"a {KEPT_TYPES[kind]} build at group_size=32 keeps their codes and scales, others quantize them again"
           if kind in KEPT_TYPES else "llmcu quantizes them again")
        for kind, count in sorted(dequantized.items())
    ]  # fmt: skip
    return Checkpoint(cfg, weights, format="gguf", path=path, extra={"notes": notes, "stored": stored})
