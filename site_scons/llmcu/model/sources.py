"""Where a model comes from: a llama2.c checkpoint, a GGUF file or a Hugging Face folder, read the same way.

Every caller that reads a model or its tokenizer goes through here, so that ``model=path/to/model.gguf`` and
``model=path/to/hf-folder`` work wherever a llama2.c checkpoint does (llmcu.model.importers holds the readers).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.config import ModelConfig
from ..core.errors import CheckpointError, TokenizerError
from .checkpoint import Checkpoint, detect_config, read_checkpoint
from .importers import GGUF_MAGIC, is_gguf, is_hf_folder
from .tokenizer import Tokenizer, read_tokenizer


def kind(path: str | os.PathLike[str]) -> str:
    """``gguf``, ``hf`` or ``llama2c`` for a model path. A ``.gguf`` file without GGUF's magic is an error (a cut or
    corrupt download), not a llama2.c checkpoint to be read as one."""
    if is_hf_folder(path):
        return "hf"
    if is_gguf(path):
        return "gguf"
    if Path(path).suffix.lower() == ".gguf" and Path(path).is_file():
        with open(path, "rb") as handle:
            head = handle.read(4)
        raise CheckpointError(f"{path}: not a GGUF file: it starts with {head!r}, where a GGUF file starts with "
                              f"{GGUF_MAGIC!r} (a cut or corrupt download?)")  # fmt: skip
    return "llama2c"


def read_model(path: str | os.PathLike[str], *, allow_nonfinite: bool = False) -> Checkpoint:
    """The model at ``path`` as float32 tensors in llama2.c's shapes."""
    source = kind(path)
    if source == "hf":
        from .importers.hf_folder import read_hf_folder

        ckpt = read_hf_folder(path)
    elif source == "gguf":
        from .importers.gguf_file import read_gguf

        ckpt = read_gguf(path)
    else:
        return read_checkpoint(path, allow_nonfinite=allow_nonfinite)
    if not allow_nonfinite:
        from .checkpoint import check_finite

        check_finite(ckpt, str(path))
    return ckpt


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    """The model's hyperparameters without its weights (for estimates before a build)."""
    source = kind(path)
    if source == "llama2c":
        return detect_config(path)
    return read_model_header(path)


def read_model_header(path: str | os.PathLike[str]) -> ModelConfig:
    if kind(path) == "hf":
        from .importers.hf_folder import config_of_folder

        return config_of_folder(Path(path))
    from .importers.gguf_file import config_of_gguf

    return config_of_gguf(Path(path))


def read_vocab(path: str | os.PathLike[str], vocab_size: int | None = None) -> Tokenizer:
    """A tokenizer: llama2.c's ``tokenizer.bin``, a sentencepiece ``tokenizer.model`` (or a Hugging Face folder
    that holds one), or the vocabulary inside a GGUF file; with ``vocab_size``, checked against the model."""
    target = Path(path)
    if target.is_dir():
        target = target / "tokenizer.model"
    if is_gguf(target):
        from .importers.gguf_file import open_reader
        from .importers.vocab import from_gguf

        tok = from_gguf(open_reader(target), str(target))
    elif target.suffix == ".model":
        from .importers.vocab import from_sentencepiece

        tok = from_sentencepiece(target)
    else:
        return read_tokenizer(target, vocab_size)
    if vocab_size is not None and tok.vocab_size != vocab_size:
        raise TokenizerError(
            f"{target}: the vocabulary has {tok.vocab_size} pieces but the model's embedding table has "
            f"{vocab_size} rows: this tokenizer does not belong to this model"
        )
    return tok


def source_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a model (or tokenizer) path stands for, for a build's dependencies: the path itself, or a
    Hugging Face folder's config, index, weights and tokenizer."""
    folder = Path(path)
    if not folder.is_dir():
        return [folder]
    names = ("config.json", "model.safetensors.index.json", "tokenizer.model")
    return sorted([folder / name for name in names if (folder / name).is_file()] + list(folder.glob("*.safetensors")))
