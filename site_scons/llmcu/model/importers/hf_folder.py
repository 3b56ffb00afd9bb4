"""A Hugging Face Llama folder: ``config.json``, the weights in ``model.safetensors`` (or shards listed by
``model.safetensors.index.json``) and the sentencepiece ``tokenizer.model``.

Only the Llama architecture (``LlamaForCausalLM``, ``model_type`` llama) with plain RoPE is read; q_proj and
k_proj are brought back to llama2.c's interleaved rotary layout (llmcu.model.importers.llama).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...core.config import ModelConfig
from ..checkpoint import Checkpoint
from .llama import ModelImportError, hf_to_interleaved, make_config, stack_layers
from .safetensors_file import SafetensorsFile

ARCHITECTURES = ("LlamaForCausalLM",)
INDEX = "model.safetensors.index.json"


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelImportError(f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise ModelImportError(f"{path}: not a JSON object")
    architectures = config.get("architectures") or []
    if config.get("model_type") != "llama" or not any(arch in ARCHITECTURES for arch in architectures):
        raise ModelImportError(
            f"{path}: model_type {config.get('model_type')!r}, architectures {architectures}: llmcu runs the Llama "
            "architecture (LlamaForCausalLM) only"
        )
    if config.get("hidden_act", "silu") != "silu":
        raise ModelImportError(f"{path}: hidden_act {config['hidden_act']!r}; llmcu's feed-forward is SwiGLU (silu)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ModelImportError(f"{path}: attention or MLP biases are not supported (llama2.c's layers have none)")
    return config


def _files(folder: Path) -> list[Path]:
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ModelImportError(f"cannot read {index}: {error}") from None
        return [folder / name for name in sorted(set(weight_map.values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if not found:
        raise ModelImportError(f"{folder}: no model.safetensors (nor {INDEX}); llmcu reads safetensors weights")
    return found


def config_of_folder(folder: Path) -> ModelConfig:
    """The model's hyperparameters from config.json (checked)."""
    config = read_config(folder)
    dim, n_heads = config.get("hidden_size"), config.get("num_attention_heads")
    n_kv_heads = config.get("num_key_value_heads") or n_heads
    return make_config(
        str(folder),
        dim=dim,
        hidden_dim=config.get("intermediate_size"),
        n_layers=config.get("num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=config.get("vocab_size"),
        seq_len=config.get("max_position_embeddings"),
        shared_classifier=bool(config.get("tie_word_embeddings", False)),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        head_dim=config.get("head_dim"),
        rope_scaling=config.get("rope_scaling"),
    )


def read_hf_folder(folder: str | Path) -> Checkpoint:
    """The folder's model as a Checkpoint (float32, llama2.c's shapes and rotary layout)."""
    folder = Path(folder)
    source = str(folder)
    cfg = config_of_folder(folder)
    files = [SafetensorsFile(path) for path in _files(folder)]
    try:
        where = {name: handle for handle in files for name in handle.tensors}

        def tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
            handle = where.get(name)
            if handle is None:
                raise ModelImportError(f"{source}: tensor {name} is missing")
            value = handle.read(name)
            if tuple(value.shape) != shape:
                raise ModelImportError(f"{source}: {name} has shape {tuple(value.shape)}, expected {shape}")
            return value

        d, h, kv, v = cfg.dim, cfg.hidden_dim, cfg.kv_dim, cfg.vocab_size
        layers = range(cfg.n_layers)

        def per_layer(part: str, shape: tuple[int, ...], fix: Any = None) -> np.ndarray:
            values = (tensor(f"model.layers.{i}.{part}.weight", shape) for i in layers)
            if fix is not None:
                values = (fix(value) for value in values)
            return stack_layers(source, values, cfg.n_layers, shape, part)

        weights = {
            "tok_embeddings": tensor("model.embed_tokens.weight", (v, d)),
            "rms_att": per_layer("input_layernorm", (d,)),
            "wq": per_layer("self_attn.q_proj", (d, d), lambda w: hf_to_interleaved(w, cfg.n_heads)),
            "wk": per_layer("self_attn.k_proj", (kv, d), lambda w: hf_to_interleaved(w, cfg.n_kv_heads)),
            "wv": per_layer("self_attn.v_proj", (kv, d)),
            "wo": per_layer("self_attn.o_proj", (d, d)),
            "rms_ffn": per_layer("post_attention_layernorm", (d,)),
            "w1": per_layer("mlp.gate_proj", (h, d)),
            "w2": per_layer("mlp.down_proj", (d, h)),
            "w3": per_layer("mlp.up_proj", (h, d)),
            "rms_final": tensor("model.norm.weight", (d,)),
        }
        if not cfg.shared_classifier:
            if "lm_head.weight" not in where:
                raise ModelImportError(f"{source}: tie_word_embeddings is false but lm_head.weight is missing")
            weights["wcls"] = tensor("lm_head.weight", (v, d))
        weights = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()}
    finally:
        for handle in files:
            handle.close()
    return Checkpoint(cfg, weights, format="hf-safetensors", path=folder)
