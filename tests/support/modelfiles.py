"""Writing models in Hugging Face's format for the importer tests: a folder (the safetensors package) from a llmcu
Checkpoint, and BF16 safetensors. GGUF files come from the library's own writer, llmcu.model.gguf_writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmcu.model.checkpoint import Checkpoint
from llmcu.model.importers.llama import interleaved_to_hf

HF_NAMES = {"rms_att": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "rms_ffn": "post_attention_layernorm",
            "w1": "mlp.gate_proj", "w2": "mlp.down_proj", "w3": "mlp.up_proj"}  # fmt: skip


def write_hf_folder(folder: Path, ckpt: Checkpoint, *, dtype: str = "F32", config_extra: dict | None = None) -> Path:
    """``ckpt`` as a Hugging Face Llama folder (config.json + model.safetensors), q/k in HF's rotary order."""
    from safetensors.numpy import save_file

    cfg, weights = ckpt.config, ckpt.weights
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads, "vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.seq_len,
        "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.norm_eps, "tie_word_embeddings": cfg.shared_classifier,
        "hidden_act": "silu", "torch_dtype": "float32", **(config_extra or {}),
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    def cast(value: np.ndarray) -> np.ndarray:
        value = np.ascontiguousarray(value, dtype=np.float32)
        return value.astype(np.float16) if dtype == "F16" else value

    tensors = {
        "model.embed_tokens.weight": cast(weights["tok_embeddings"]),
        "model.norm.weight": cast(weights["rms_final"]),
    }
    for layer in range(cfg.n_layers):
        for ours, theirs in HF_NAMES.items():
            value = weights[ours][layer]
            if ours == "wq":
                value = interleaved_to_hf(value, cfg.n_heads)
            elif ours == "wk":
                value = interleaved_to_hf(value, cfg.n_kv_heads)
            tensors[f"model.layers.{layer}.{theirs}.weight"] = cast(value)
    if not cfg.shared_classifier:
        tensors["lm_head.weight"] = cast(weights["wcls"])
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def to_bf16_file(path: Path) -> None:
    """Rewrite an F32 safetensors file with every tensor in BF16 (truncated: the upper 16 bits), by hand, since
    numpy has no bfloat16 to give the package."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    out, offset = bytearray(), 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        values = np.frombuffer(body[start:end], dtype="<u4")
        chunk = (values >> 16).astype("<u2").tobytes()
        entry.update(dtype="BF16", data_offsets=[offset, offset + len(chunk)])
        out += chunk
        offset += len(chunk)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(out))
