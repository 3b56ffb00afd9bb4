"""Sentencepiece vocabularies as llama2.c tokenizers: from a ``tokenizer.model`` (the ``sentencepiece`` package)
or from a GGUF file's ``tokenizer.ggml.*`` arrays.

A llama2.c vocabulary stores each piece as its UTF-8 bytes with sentencepiece's word marker ``▁`` (U+2581) turned
into a space, keeps the byte pieces ``<0x00>``..``<0xFF>`` as text (the runtime decodes them to raw bytes), and
writes BOS and EOS as ``"\\n<s>\\n"`` and ``"\\n</s>\\n"``; the merge score of each piece is sentencepiece's
score. run.c's encoder then needs BOS at 1, EOS at 2 and the byte pieces at ids 3..258 (byte fallback), which is
checked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import TokenizerError
from ..tokenizer import BOS, BYTE_FALLBACK_OFFSET, EOS, Tokenizer

WORD_MARK = "\u2581"


def to_tokenizer(
    pieces: Sequence[str],
    scores: Sequence[float],
    source: str,
    *,
    add_space_prefix: bool = True,
    add_bos: bool = True,
) -> Tokenizer:
    """llama2.c's vocabulary from sentencepiece pieces and scores (ids in order), and how prompts are encoded."""
    if len(pieces) < BYTE_FALLBACK_OFFSET + 256:
        raise TokenizerError(f"{source}: {len(pieces)} pieces; a llama vocabulary has at least 259")
    for byte in range(256):
        expected = f"<0x{byte:02X}>"
        if pieces[BYTE_FALLBACK_OFFSET + byte] != expected:
            raise TokenizerError(
                f"{source}: piece {BYTE_FALLBACK_OFFSET + byte} is {pieces[BYTE_FALLBACK_OFFSET + byte]!r}, not "
                f"{expected}: llmcu's encoder (as run.c's) needs the byte-fallback pieces at ids 3..258 (a "
                "sentencepiece model trained with byte_fallback=true, as Llama's)"
            )
    converted = []
    for index, piece in enumerate(pieces):
        if index == BOS:
            text = "\n<s>\n"
        elif index == EOS:
            text = "\n</s>\n"
        else:
            text = piece.replace(WORD_MARK, " ")
        converted.append(text.encode("utf-8"))
    return Tokenizer(
        converted,
        np.asarray(scores, dtype=np.float32),
        max(len(p) for p in converted),
        add_space_prefix=add_space_prefix,
        add_bos=add_bos,
    )


def from_sentencepiece(path: str | Path) -> Tokenizer:
    """A ``tokenizer.model`` file."""
    try:
        import sentencepiece
    except ImportError:
        raise TokenizerError(
            "reading tokenizer.model needs the sentencepiece package: pip install sentencepiece"
        ) from None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as error:
        raise TokenizerError(f"{path}: not a sentencepiece model ({error})") from None
    if processor.bos_id() != BOS or processor.eos_id() != EOS:
        raise TokenizerError(f"{path}: BOS {processor.bos_id()} and EOS {processor.eos_id()}; run.c's are 1 and 2")
    size = processor.get_piece_size()
    return to_tokenizer([processor.id_to_piece(i) for i in range(size)],
                        [processor.get_score(i) for i in range(size)], str(path))  # fmt: skip


def from_gguf(reader: Any, source: str) -> Tokenizer:
    """The vocabulary embedded in a GGUF file (an opened gguf.GGUFReader)."""
    from .gguf_file import field_value

    model = field_value(reader, "tokenizer.ggml.model")
    if model != "llama":
        raise TokenizerError(
            f"{source}: tokenizer.ggml.model is {model!r}; llmcu's encoder is sentencepiece's BPE (\"llama\")"
        )
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    scores = field_value(reader, "tokenizer.ggml.scores")
    if not tokens:
        raise TokenizerError(f"{source}: no tokenizer.ggml.tokens")
    if scores is None or len(scores) != len(tokens):
        raise TokenizerError(f"{source}: tokenizer.ggml.scores missing or not one per token")
    for name, wanted in (("bos", BOS), ("eos", EOS)):
        found = field_value(reader, f"tokenizer.ggml.{name}_token_id", wanted)
        if int(found) != wanted:
            raise TokenizerError(f"{source}: {name.upper()} is token {found}; run.c's is {wanted}")
    # What llama.cpp honours too: a vocabulary may ask for no dummy-prefix space or no BOS (both default on).
    add_space_prefix = bool(field_value(reader, "tokenizer.ggml.add_space_prefix", True))
    add_bos = bool(field_value(reader, "tokenizer.ggml.add_bos_token", True))
    return to_tokenizer([str(token) for token in tokens], [float(score) for score in scores], source,
                        add_space_prefix=add_space_prefix, add_bos=add_bos)  # fmt: skip
