"""Writing models in other formats for the importer tests: GGUF (the gguf package) and Hugging Face folders
(the safetensors package), from a llmcu Checkpoint and Tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmcu.model.checkpoint import Checkpoint
from llmcu.model.importers.llama import interleaved_to_hf
from llmcu.model.tokenizer import Tokenizer

GGUF_NAMES = {"rms_att": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
              "rms_ffn": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up"}  # fmt: skip
HF_NAMES = {"rms_att": "input_layernorm", "wq": "self_attn.q_proj", "wk": "self_attn.k_proj",
            "wv": "self_attn.v_proj", "wo": "self_attn.o_proj", "rms_ffn": "post_attention_layernorm",
            "w1": "mlp.gate_proj", "w2": "mlp.down_proj", "w3": "mlp.up_proj"}  # fmt: skip


def sentencepiece_pieces(tok: Tokenizer) -> list[str]:
    """llama2.c's pieces back in sentencepiece's spelling (word marker, <s> and </s>)."""
    pieces = []
    for index, piece in enumerate(tok.pieces):
        if index == 1:
            pieces.append("<s>")
        elif index == 2:
            pieces.append("</s>")
        else:
            pieces.append(piece.decode("utf-8").replace(" ", "\u2581"))
    return pieces


def write_gguf(path: Path, ckpt: Checkpoint, tok: Tokenizer, *, qtype: str = "F32", arch: str = "llama",
               extra: dict | None = None, add_space_prefix: bool | None = None,
               add_bos: bool | None = None) -> Path:  # fmt: skip
    """``ckpt`` as a llama.cpp GGUF file; matrices in ``qtype`` (F32, F16, Q8_0, Q4_0), norms in F32."""
    import gguf
    from gguf import quants

    cfg, weights = ckpt.config, ckpt.weights
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(cfg.seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_rope_dimension_count(cfg.head_size)
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(sentencepiece_pieces(tok))
    writer.add_token_scores([float(score) for score in tok.scores])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)

    def add(name: str, value: np.ndarray, matrix: bool) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        if not matrix or qtype == "F32" or (qtype != "F16" and value.shape[-1] % 32):  # as llama.cpp: rows of
            # whole blocks only, others stay unquantized
            writer.add_tensor(name, value)
        elif qtype == "F16":
            writer.add_tensor(name, value.astype(np.float16))
        else:
            kind = gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(name, quants.quantize(value, kind), raw_dtype=kind)  # its shape: rows x block bytes

    add("token_embd.weight", weights["tok_embeddings"], True)
    for layer in range(cfg.n_layers):
        for ours, theirs in GGUF_NAMES.items():
            add(f"blk.{layer}.{theirs}.weight", weights[ours][layer], not ours.startswith("rms"))
    add("output_norm.weight", weights["rms_final"], False)
    if not cfg.shared_classifier:
        add("output.weight", weights["wcls"], True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


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
