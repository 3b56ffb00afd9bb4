"""Code generation: the data file layout, one symbol and section per tensor, atomic outputs, checks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llmcu.builder.codegen import DATA_FILE, GENERATED_FILES, generate, tokenizer_blobs
from llmcu.core.config import ModelConfig
from llmcu.core.errors import LlmcuError, OptionError
from llmcu.model.checkpoint import random_checkpoint
from llmcu.model.quantize import QuantizedMatrix, QuantPlan, quantize_checkpoint
from llmcu.model.tokenizer import Tokenizer, read_tokenizer

SMALL = ModelConfig(dim=16, hidden_dim=40, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, seq_len=32,
                    shared_classifier=False)  # fmt: skip


@pytest.fixture(scope="module")
def tok(tok512: Path) -> Tokenizer:
    return read_tokenizer(tok512, 512)


def _symbols(assembly: str) -> dict[str, tuple[str, int, int]]:
    """symbol -> (section, offset, size) from a generated model_data.S."""
    found = {}
    pattern = re.compile(
        r'\.section (\S+),"a"\n\s+\.balign \d+\n\s+\.global (\w+)\n.*?\n\w+:\n\s+\.incbin "[^"]+", (\d+), (\d+)'
    )
    for section, symbol, offset, size in pattern.findall(assembly):
        found[symbol] = (section, int(offset), int(size))
    return found


def test_every_tensor_has_its_symbol_section_and_bytes(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = random_checkpoint(SMALL, seed=3)
    plan = QuantPlan.parse("q4", 8, "tok_embeddings=q8")
    model = generate(ckpt, tok, plan, tmp_path, model_name="small")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(GENERATED_FILES)
    symbols = _symbols((tmp_path / "model_data.S").read_text())
    assert set(symbols) == {blob.symbol for blob in model.blobs}
    data = (tmp_path / DATA_FILE).read_bytes()
    for blob in model.blobs:
        section, offset, size = symbols[blob.symbol]
        assert section.endswith(blob.symbol) and offset % 16 == 0
        assert data[offset : offset + size] == blob.data
    # Spot-check the bytes: layer 1's w2 in q4 and the unshared classifier's scales.
    stack = quantize_checkpoint(ckpt, plan)["w2"]  # the build's fit (calibrated GPTQ), layer 1
    assert stack.scales is not None
    w2 = QuantizedMatrix("q4", 8, stack.q[1], stack.scales[1])
    section, offset, size = symbols["llmcu_w_w2_l1"]
    assert data[offset : offset + size] == w2.storage()[0]
    assert size == 16 * (40 // 2)
    assert symbols["llmcu_s_wcls"][2] == 512 * 2 * 4
    weights_c = (tmp_path / "model_weights.c").read_text()
    assert ".wcls = { llmcu_w_wcls, llmcu_s_wcls }" in weights_c
    assert ".rms_att = llmcu_w_rms_att_l1" in weights_c


def test_config_header_constants(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = random_checkpoint(SMALL, seed=3)
    generate(ckpt, tok, QuantPlan.parse("q4", 8, "tok_embeddings=q8"), tmp_path, model_name="small", seq_len=16)
    header = (tmp_path / "model_config.h").read_text()
    expected = {
        "LLMCU_DIM": "16", "LLMCU_HIDDEN_DIM": "40", "LLMCU_N_KV_HEADS": "2", "LLMCU_HEAD_SIZE": "4",
        "LLMCU_KV_DIM": "8", "LLMCU_SEQ_LEN": "16", "LLMCU_SHARED_CLASSIFIER": "0", "LLMCU_GROUP_SIZE": "8",
        "LLMCU_QTYPE_TOK_EMBEDDINGS": "1", "LLMCU_QTYPE_WQ": "2", "LLMCU_QTYPE_WCLS": "2",
        "LLMCU_MODEL_NAME": '"small"', "LLMCU_KV_CACHE_BYTES": f"{2 * 2 * 16 * 8 * 4}u",
    }  # fmt: skip
    for name, value in expected.items():
        assert f"#define {name} {value}\n" in header, name


def test_shared_classifier_uses_the_embedding_table(tmp_path: Path, tok: Tokenizer) -> None:
    shared = ModelConfig(16, 40, 1, 4, 4, 512, 8, True)
    generate(random_checkpoint(shared), tok, QuantPlan("q8", 16), tmp_path, model_name="s")
    weights_c = (tmp_path / "model_weights.c").read_text()
    assert ".wcls = { llmcu_w_tok_embeddings, llmcu_s_tok_embeddings }" in weights_c
    assert "#define LLMCU_QTYPE_WCLS 1\n" in (tmp_path / "model_config.h").read_text()


def test_tokenizer_lookup_order_is_sorted(tok: Tokenizer) -> None:
    blobs = {blob.symbol: blob for blob in tokenizer_blobs(tok)}
    order = np.frombuffer(blobs["llmcu_tok_sorted"].data, dtype="<u4")
    offsets = np.frombuffer(blobs["llmcu_tok_offsets"].data, dtype="<u4")
    text = blobs["llmcu_tok_bytes"].data
    pieces = [text[offsets[i] : offsets[i + 1]] for i in order]
    assert pieces == sorted(tok.pieces)
    assert sorted(order.tolist()) == list(range(512))


def test_mismatched_tokenizer_is_rejected(tmp_path: Path, tok: Tokenizer) -> None:
    config = ModelConfig(16, 40, 1, 4, 4, 300, 8, True)
    with pytest.raises(LlmcuError, match=r"512 tokens but the model.s vocab_size is 300"):
        generate(random_checkpoint(config), tok, QuantPlan(), tmp_path, model_name="x")
    assert not any(tmp_path.iterdir()), "nothing may be written for a rejected model"


def test_seq_len_beyond_the_model_is_rejected(tmp_path: Path, tok: Tokenizer) -> None:
    with pytest.raises(OptionError, match=r"outside 1\.\.32"):
        generate(random_checkpoint(SMALL), tok, QuantPlan(), tmp_path, model_name="x", seq_len=64)


def test_generated_sources_compile_and_link_symbols(tmp_path: Path, tok: Tokenizer) -> None:
    ckpt = random_checkpoint(SMALL, seed=5)
    generate(ckpt, tok, QuantPlan.parse("q4", 8), tmp_path, model_name="small")
    root = Path(__file__).resolve().parents[2]
    obj = tmp_path / "weights.o"
    data_obj = tmp_path / "data.o"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-c", f"-I{root / 'runtime_c'}", f"-I{tmp_path}",
                    str(tmp_path / "model_weights.c"), "-o", str(obj)], check=True)  # fmt: skip
    subprocess.run(["gcc", "-c", f"-Wa,-I{tmp_path}", str(tmp_path / "model_data.S"), "-o", str(data_obj)],
                   check=True)  # fmt: skip
    sections = subprocess.run(["objdump", "-h", str(data_obj)], capture_output=True, text=True, check=True).stdout
    assert ".llmcu_weights.llmcu_w_wq_l0" in sections and ".llmcu_tokenizer.llmcu_tok_bytes" in sections
    assert "READONLY" in sections


@pytest.mark.slow
def test_15m_shaped_model_generates_and_assembles_fast(tmp_path: Path, tokenizer_32k: Path) -> None:
    """A 15M model's weights go to model_data.bin, which the assembler pulls in whole (.incbin): the object holds
    every byte of it, and the C source the compiler sees stays small whatever the model's size."""
    config = ModelConfig(288, 768, 6, 6, 6, 32000, 256, True)
    ckpt = random_checkpoint(config, seed=0)
    tok = read_tokenizer(tokenizer_32k, 32000)
    generate(ckpt, tok, QuantPlan("q8", 32, fit="absmax"), tmp_path, model_name="15m")  # the layout, not the fit
    subprocess.run(["gcc", "-c", f"-Wa,-I{tmp_path}", str(tmp_path / "model_data.S"), "-o", str(tmp_path / "d.o")],
                   check=True)  # fmt: skip
    data = (tmp_path / "model_data.bin").stat().st_size
    assert data > 10 << 20 and (tmp_path / "d.o").stat().st_size > data
    assert (tmp_path / "model_weights.c").stat().st_size * 32 < data  # the tables that point in, not the tensors
