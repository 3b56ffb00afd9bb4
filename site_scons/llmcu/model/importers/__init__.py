"""Models that are not llama2.c checkpoints: GGUF files (llama.cpp's format) and Hugging Face folders
(``config.json`` + ``*.safetensors`` + ``tokenizer.model``) of the Llama architecture.

Each becomes what the rest of llmcu works with: a :class:`llmcu.model.checkpoint.Checkpoint` (float32 tensors in
llama2.c's shapes and rotary layout, with the model's own ``rope_theta`` and ``norm_eps``) and a
:class:`llmcu.model.tokenizer.Tokenizer` (llama2.c's vocabulary: pieces with spaces, byte fallback at ids 3..258).
llmcu.model.sources dispatches here by what a path is (every reader of a model goes through it).
"""

from __future__ import annotations

from pathlib import Path

GGUF_MAGIC = b"GGUF"


def is_gguf(path: str | Path) -> bool:
    """A file that starts with GGUF's magic."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def is_hf_folder(path: str | Path) -> bool:
    """A folder with a Hugging Face ``config.json``."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()
