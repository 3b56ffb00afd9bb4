"""Writing a llmcu checkpoint and tokenizer as a llama.cpp GGUF file (``general.architecture = llama``), with
the ``gguf`` package that llama.cpp publishes: for the peer benchmark (llama.cpp runs the same model as llmcu)
and for the importer's tests.

The matrices go in ``qtype``: F32, F16, or Q8_0 / Q4_0 quantized by the package's own quantizers, which reproduce
ggml's reference ones (llama-quantize's) bit for bit. As llama.cpp does, a matrix whose rows are not whole blocks
of 32 stays F32. llama2.c checkpoints already hold q and k in the rotary order GGUF uses, so nothing is permuted.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import gguf
import numpy as np
from gguf import quants

from .checkpoint import Checkpoint
from .tokenizer import BYTE_FALLBACK_OFFSET, Tokenizer

GGUF_QTYPES = ("F32", "F16", "Q8_0", "Q4_0")
# llama2.c's per-layer tensor names -> llama.cpp's (blk.N.<name>.weight)
GGUF_NAMES = {"rms_att": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
              "rms_ffn": "ffn_norm", "w1": "ffn_gate", "w2": "ffn_down", "w3": "ffn_up"}  # fmt: skip
GGUF_BLOCK = 32  # Q8_0 and Q4_0 quantize rows in blocks of 32 values


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


def token_types(tok: Tokenizer) -> list[int]:
    """sentencepiece's kind of each piece, as llama.cpp's converters record it: <unk>, the two control pieces, the
    256 byte pieces (<0x00>..<0xFF>, which llama.cpp decodes to their byte), and the normal ones."""
    kinds = []
    for index, piece in enumerate(tok.pieces):
        if index == 0:
            kinds.append(gguf.TokenType.UNKNOWN)
        elif index in (1, 2):
            kinds.append(gguf.TokenType.CONTROL)
        elif BYTE_FALLBACK_OFFSET <= index < BYTE_FALLBACK_OFFSET + 256 and piece == b"<0x%02X>" % (
            index - BYTE_FALLBACK_OFFSET
        ):
            kinds.append(gguf.TokenType.BYTE)
        else:
            kinds.append(gguf.TokenType.NORMAL)
    return [int(kind) for kind in kinds]


def write_gguf(path: Path, ckpt: Checkpoint, tok: Tokenizer, *, qtype: str = "F32", arch: str = "llama",
               extra: dict | None = None, add_space_prefix: bool | None = None,
               add_bos: bool | None = None) -> Path:  # fmt: skip
    """``ckpt`` as a GGUF file at ``path``, written atomically (a temporary file beside it, renamed when whole);
    matrices in ``qtype``, norms in F32."""
    if qtype not in GGUF_QTYPES:
        raise ValueError(f"GGUF type {qtype!r}: llmcu writes {', '.join(GGUF_QTYPES)}")
    cfg, weights = ckpt.config, ckpt.weights
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    writer = gguf.GGUFWriter(str(partial), arch)
    writer.add_context_length(cfg.seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_rope_dimension_count(cfg.head_size)
    writer.add_file_type(_FILE_TYPES[qtype])
    for key, value in (extra or {}).items():
        writer.add_string(key, value)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(sentencepiece_pieces(tok))
    writer.add_token_scores([float(score) for score in tok.scores])
    writer.add_token_types(token_types(tok))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if add_space_prefix is not None:
        writer.add_add_space_prefix(add_space_prefix)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)

    def add(name: str, value: np.ndarray, matrix: bool) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        if not matrix or qtype == "F32" or (qtype != "F16" and value.shape[-1] % GGUF_BLOCK):
            writer.add_tensor(name, value)
        elif qtype == "F16":
            writer.add_tensor(name, value.astype(np.float16))
        else:
            kind = gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(name, quants.quantize(value, kind), raw_dtype=kind)  # its shape: rows x block bytes

    try:
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
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return path


# general.file_type (llama_ftype): what llama.cpp reports the file as
_FILE_TYPES = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
               "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}  # fmt: skip
