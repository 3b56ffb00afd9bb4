"""GGUF files and Hugging Face folders as models (llmcu.model.importers, llmcu.model.sources).

stories260K written as GGUF and as a Hugging Face folder reads back to the very same weights and vocabulary, and
builds give byte for byte the llama2.c checkpoint's output; a random model with its own RoPE base, RMSNorm epsilon,
grouped-query attention and a separate classifier matches the oracle token for token on the host and under
qemu-aarch64; a sentencepiece model trained here encodes as sentencepiece does; bad files are clear errors.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llmcu.core.errors import CheckpointError, LlmcuError, TokenizerError
from llmcu.model import sources
from llmcu.model.checkpoint import random_checkpoint, read_checkpoint
from llmcu.model.gguf_writer import write_gguf
from llmcu.model.oracle import generate
from llmcu.model.reference import Reference
from llmcu.model.tokenizer import read_tokenizer
from support.build import scons
from support.modelfiles import to_bf16_file, write_hf_folder

pytest.importorskip("gguf")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def original(stories260k: Path, tok512: Path):
    return read_checkpoint(stories260k), read_tokenizer(tok512)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, original) -> dict[str, Path]:
    ckpt, tok = original
    root = tmp_path_factory.mktemp("converted")
    return {
        "gguf": write_gguf(root / "stories260K.gguf", ckpt, tok),
        "hf": write_hf_folder(root / "stories260K-hf", ckpt),
    }


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def test_converted_files_read_back_to_the_same_model(converted: dict[str, Path], original) -> None:
    ckpt, tok = original
    for path in converted.values():
        read = sources.read_model(path)
        assert dataclasses.replace(read.config, norm_eps=1e-5) == ckpt.config  # GGUF keeps eps as float32
        assert np.float32(read.config.norm_eps) == np.float32(1e-5) and read.config.rope_theta == 10000.0
        assert _same_weights(read.weights, ckpt.weights)
    assert sources.read_vocab(converted["gguf"], 512) == tok
    assert sources.kind(converted["gguf"]) == "gguf" and sources.kind(converted["hf"]) == "hf"
    assert sources.read_config(converted["hf"]) == dataclasses.replace(ckpt.config, norm_eps=1e-5)


def test_half_precision_and_quantized_tensors(tmp_path: Path, original) -> None:
    from gguf import GGMLQuantizationType, quants

    ckpt, tok = original
    f16 = sources.read_model(write_hf_folder(tmp_path / "f16", ckpt, dtype="F16"))
    assert np.array_equal(f16.weights["w1"], ckpt.weights["w1"].astype(np.float16).astype(np.float32))
    folder = write_hf_folder(tmp_path / "bf16", ckpt)
    to_bf16_file(folder / "model.safetensors")
    bf16 = sources.read_model(folder)
    truncated = (ckpt.weights["wo"].view(np.uint32) & 0xFFFF0000).view(np.float32)
    assert np.array_equal(bf16.weights["wo"], truncated)
    for kind in ("Q8_0", "Q4_0"):
        model = sources.read_model(write_gguf(tmp_path / f"{kind}.gguf", ckpt, tok, qtype=kind))
        qtype = GGMLQuantizationType[kind]
        expected = quants.dequantize(quants.quantize(ckpt.weights["w1"][3], qtype), qtype)
        assert np.array_equal(model.weights["w1"][3], expected)
        assert np.array_equal(model.weights["w2"], ckpt.weights["w2"])  # 172 columns: not whole blocks, kept F32
        # the embedding table and wq, wk, wv, wo, w1, w3 of 5 layers
        ours = {"Q8_0": "q8", "Q4_0": "q4"}[kind]
        assert model.extra["notes"] == [f"31 {kind} tensors dequantized to float32; a {ours} build at group_size=32 "
                                        "keeps their codes and scales, others quantize them again"]  # fmt: skip


def _gguf_blocks(path: Path, name: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A Q8_0 or Q4_0 tensor's codes ``(rows, cols)`` and float16 scales ``(rows, blocks)`` as the file holds them:
    Q8_0 blocks are a scale and 32 int8 codes; Q4_0 blocks a scale and 16 bytes, element j in the low nibble of
    byte j and element j + 16 in its high nibble, the code being the nibble - 8."""
    import gguf

    data = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(path)).tensors}[name]
    width = {"Q8_0": 34, "Q4_0": 18}[kind]
    blocks = data.reshape(data.shape[0], -1, width)
    scales = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)
    if kind == "Q8_0":
        return blocks[:, :, 2:].copy().view(np.int8).reshape(data.shape[0], -1), scales
    nibbles = np.concatenate([blocks[:, :, 2:] & 0x0F, blocks[:, :, 2:] >> 4], axis=2).astype(np.int8) - 8
    return nibbles.reshape(data.shape[0], -1), scales


@pytest.mark.parametrize(("kind", "quant"), [("Q8_0", "q8"), ("Q4_0", "q4")])
def test_quantized_tensors_keep_their_codes(kind: str, quant: str, tmp_path: Path, original) -> None:
    """GGUF's Q8_0 and Q4_0 blocks (a float16 scale and 32 codes) become llmcu q8 and q4 groups bit for bit,
    whatever fit the build asks for; the tensor that was not quantized (w2) is fitted as usual, and a build of
    another type or group size fits everything again."""
    from llmcu.model.quantize import QuantPlan, quantize_checkpoint

    ckpt, tok = original
    path = write_gguf(tmp_path / f"{kind}.gguf", ckpt, tok, qtype=kind)
    model = sources.read_model(path)
    assert model.extra["stored"] == {k: kind for k in ("tok_embeddings", "wq", "wk", "wv", "wo", "w1", "w3")}
    codes, scales = _gguf_blocks(path, "blk.2.ffn_gate.weight", kind)
    for fit in ("gptq", "absmax"):
        w1 = quantize_checkpoint(model, QuantPlan.parse(quant, 32, "", fit, "none" if fit == "absmax" else "sampled"))
        w1 = w1["w1"]
        assert np.array_equal(w1.q[2], codes) and np.array_equal(w1.scales[2], scales)
        values = (w1.q.astype(np.float32).reshape(*w1.scales.shape, 32) * w1.scales[..., None]).reshape(w1.q.shape)
        assert np.array_equal(values, model.weights["w1"])  # every layer, exactly the file's values
    if kind == "Q4_0":
        assert (scales < 0).any() and (codes == -8).any()  # both signs of scale, all 16 codes: nothing lost
    fitted_anew = quantize_checkpoint(model, QuantPlan.parse(quant, 64))["w1"]
    assert fitted_anew.scales.shape[-1] == model.weights["w1"].shape[-1] // 64


def test_kept_blocks_need_no_calibration(tmp_path: Path, original, monkeypatch) -> None:
    """Calibration records only the inputs of the matrices a build fits: for a Q4_0 file in a q4 build that is
    w2's (its 172 columns are no whole blocks, so the file holds it as F32), not the gigabytes of moments a 1B
    model's other inputs would take; the KV ranges (kv_type=q16) need none."""
    from llmcu.model import calibration, kvq16, quantcache
    from llmcu.model.quantize import QuantPlan, quantize_checkpoint

    monkeypatch.setattr(quantcache, "enabled", lambda *args: False)
    asked: list[frozenset[str]] = []
    collect = calibration.collect

    def spy(*args, **kwargs):
        asked.append(kwargs.get("inputs", calibration.INPUTS))
        return collect(*args, **kwargs)

    monkeypatch.setattr(calibration, "collect", spy)
    monkeypatch.setattr(calibration, "_MEMO", {})
    ckpt, tok = original
    model = sources.read_model(write_gguf(tmp_path / "q4_0.gguf", ckpt, tok, qtype="Q4_0"))
    quantize_checkpoint(model, QuantPlan.parse("q4", 32))
    assert asked == [frozenset({"ffn_hidden"})]
    kvq16.calibrated_scales(model)
    assert len(asked) == 1  # the KV ranges come with every calibration: the one above serves
    quantize_checkpoint(model, QuantPlan.parse("q8", 32))  # Q4_0 blocks are fitted again as q8: every input
    assert asked[-1] == calibration.INPUTS


def test_a_stored_matrix_that_is_not_whole_codes_is_fitted_with_its_calibration(tmp_path: Path, original,
                                                                               monkeypatch) -> None:  # fmt: skip
    """A Q4_0 kind whose values do not come apart into codes (one weight moved after dequantizing) is fitted like
    any other, with its input in the calibration; the rest are still kept."""
    from llmcu.model import calibration, quantcache
    from llmcu.model.quantize import QuantPlan, kept_from_source, quantize_checkpoint

    monkeypatch.setattr(quantcache, "enabled", lambda *args: False)
    monkeypatch.setattr(calibration, "_MEMO", {})
    ckpt, tok = original
    model = sources.read_model(write_gguf(tmp_path / "q4_0.gguf", ckpt, tok, qtype="Q4_0"))
    model.weights["w1"][0, 0, 0] = np.nextafter(model.weights["w1"][0, 0, 0], np.float32(1))
    plan = QuantPlan.parse("q4", 32)
    quantized = quantize_checkpoint(model, plan)
    assert sorted(kept_from_source(model, plan, quantized)) == ["tok_embeddings", "w3", "wk", "wo", "wq", "wv"]
    assert not np.array_equal(quantized["w1"].dequantize(), model.weights["w1"])  # fitted, so not exact


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                    reason="qemu-system-arm or the Arm cross compiler missing")  # fmt: skip
def test_a_q4_0_file_runs_as_it_is_on_every_kernel_set(tmp_path: Path, original, stories260k: Path) -> None:
    """A Q4_0 GGUF in a q4 build: the file's codes and scales (half of them negative) through the x86, Cortex-M7
    and NEON q4 kernels give the oracle's tokens, the oracle quantizing nothing again."""
    from llmcu.builder.settings import RunParams
    from llmcu.device import qemu
    from llmcu.device.protocol import parse

    ckpt, tok = original
    path = write_gguf(tmp_path / "q4_0.gguf", ckpt, tok, qtype="Q4_0")
    model = sources.read_model(path)
    oracle = Reference.from_checkpoint(model, "q4", 32)  # w2 (F32 in the file: not whole blocks) fitted as builds do
    expected = generate(oracle, tok, "Once upon a time", 120, 0.0, 0.9, 1).tokens
    with ThreadPoolExecutor(2) as pool:  # scons builds one file at a time: two builds use both cores
        list(pool.map(lambda target: scons([f"target={target}", f"model={path}", "quant=q4",
                                            f"build_dir={tmp_path / target}"], stories260k.parent),
                      ("host", "qemu-m7")))  # fmt: skip
    (program,) = (tmp_path / "host" / "host").glob("*-q4/llmcu")
    assert parse(_run(program, "-p", "Once upon a time", "-n", "120", "-t", "0.0")).token_sequence() == expected
    (elf,) = (tmp_path / "qemu-m7" / "qemu-m7").glob("*-q4/firmware.elf")
    out = qemu.run_firmware(elf, RunParams("Once upon a time", 120, 0.0, 0.9, 1))
    assert out.ok and out.token_sequence() == expected
    if shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-gcc"):  # and the NEON kernels
        logs = tmp_path / "logs"
        args = ["target=rzv2l", f"model={path}", "quant=q4", f"build_dir={tmp_path / 'rzv2l'}", "run", "hil=qemu",
                "prompt=Once upon a time", "steps=120", "temperature=0", f"log_dir={logs}"]  # fmt: skip
        scons(args, stories260k.parent)
        (log,) = logs.iterdir()
        rows = [json.loads(line) for line in (log / "tokens.jsonl").read_text().splitlines()]
        assert [rows[0]["token"], *(row["next"] for row in rows)] == expected


def test_the_quant_report_says_what_importing_did(tmp_path: Path, original, stories260k: Path) -> None:
    ckpt, tok = original
    path = write_gguf(tmp_path / "q4_0.gguf", ckpt, tok, qtype="Q4_0")
    from llmcu.builder import steps
    from llmcu.builder.settings import configure

    settings = configure({"target": "host", "model": str(path), "quant": "q4", "build_dir": str(tmp_path)})
    steps.generate_sources(settings)
    report = (settings.out_dir / "quant_report.md").read_text()
    note = "31 Q4_0 tensors dequantized to float32; a q4 build at group_size=32 keeps their codes and scales, others"
    assert f"## The source file\n\n- {note}" in report
    notes = json.loads((settings.out_dir / "quant_report.json").read_text())["source_notes"]
    assert notes[0].startswith(note)
    assert notes[1] == "kept bit for bit from the file: tok_embeddings, wq, wk, wv, wo, w1, w3 (Q4_0)"
    assert len(notes) == 2  # nothing of Q4_0 fitted again (w2 was F32 in the file)
    q8 = configure({"target": "host", "model": str(path), "quant": "q8", "build_dir": str(tmp_path)})
    steps.generate_sources(q8)
    again = json.loads((q8.out_dir / "quant_report.json").read_text())["source_notes"][1]
    assert again == "fitted again (gptq): " + ", ".join(f"{k} (Q4_0)" for k in ("tok_embeddings", "wq", "wk", "wv",
                                                                               "wo", "w1", "w3"))  # fmt: skip


def _run(program: Path, *args: str) -> bytes:
    return subprocess.run([str(program), *args], capture_output=True, check=True, timeout=120).stdout


GREEDY = ("-p", "Once upon a time", "-n", "96", "-t", "0.0")
SAMPLED = ("-p", "The little dog", "-n", "96", "-t", "0.9", "-P", "0.9", "-s", "42")


@pytest.mark.parametrize("quant", ["fp32", pytest.param("q8", marks=pytest.mark.slow)])
def test_converted_stories260k_builds_give_the_checkpoints_output(
    quant: str, converted: dict[str, Path], tmp_path: Path, stories260k: Path, tok512: Path
) -> None:
    models = stories260k.parent

    def build(name: str, model: str) -> tuple[bytes, bytes]:
        args = ["target=host", f"model={model}", f"quant={quant}", f"build_dir={tmp_path / name}"]
        if name == "hf":
            args.append(f"tokenizer={tok512}")  # the folder has no tokenizer.model: llama2.c's vocabulary
        scons(args, models)
        (program,) = (tmp_path / name / "host").glob(f"*-{quant}/llmcu")
        return _run(program, *GREEDY), _run(program, *SAMPLED)

    sources_ = {"llama2c": "260k", "gguf": str(converted["gguf"]), "hf": str(converted["hf"])}
    with ThreadPoolExecutor(2) as pool:  # scons builds one file at a time: two builds use both cores
        outputs = dict(zip(sources_, pool.map(build, sources_, sources_.values()), strict=True))
    for name in ("gguf", "hf"):
        for ours, theirs in zip(outputs[name], outputs["llama2c"], strict=True):  # byte for byte, records aside
            assert ours.split(b"\x1etok")[0].split(b"\n", 1)[1] == theirs.split(b"\x1etok")[0].split(b"\n", 1)[1]


# ---- a model of its own kind ----

OWN = dict(dim=64, hidden_dim=96, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=512, seq_len=128,
           shared_classifier=False, rope_theta=500000.0, norm_eps=1e-6)  # fmt: skip


@pytest.fixture(scope="module")
def own_model(tmp_path_factory: pytest.TempPathFactory, tok512: Path):
    from llmcu.core.config import ModelConfig

    ckpt = random_checkpoint(ModelConfig(**OWN), seed=7, scale=0.25)
    tok = read_tokenizer(tok512)
    root = tmp_path_factory.mktemp("own")
    return ckpt, tok, write_gguf(root / "own.gguf", ckpt, tok), write_hf_folder(root / "own-hf", ckpt)


def _oracle(ckpt, tok, prompt: str, steps: int, temperature: float, seed: int = 1) -> list[int]:
    model = Reference.from_checkpoint(ckpt, "fp32", 32, kv_type="f32")
    return generate(model, tok, prompt, steps, temperature, 0.9, seed).tokens


def test_the_models_own_rope_base_and_epsilon_count(own_model) -> None:
    ckpt, tok, gguf_path, folder = own_model
    for path in (folder, gguf_path):
        read = sources.read_model(path)
        assert read.config.rope_theta == 500000.0 and not read.config.shared_classifier
        assert np.float32(read.config.norm_eps) == np.float32(1e-6) and read.config.n_kv_heads == 2
        assert _same_weights(read.weights, ckpt.weights)
    with_defaults = dataclasses.replace(
        ckpt, config=dataclasses.replace(ckpt.config, rope_theta=10000.0, norm_eps=1e-5)
    )
    assert _oracle(ckpt, tok, "Once", 40, 0.0) != _oracle(with_defaults, tok, "Once", 40, 0.0)


def test_own_model_on_the_host_equals_the_oracle(own_model, tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    ckpt, tok, _, folder = own_model
    scons(["target=host", f"model={folder}", f"tokenizer={tok512}", "quant=fp32", f"build_dir={tmp_path}"],
          stories260k.parent)  # fmt: skip
    (program,) = (tmp_path / "host").glob("own-hf-fp32/llmcu")
    header = (program.parent / "gen" / "model_config.h").read_text()
    assert "#define LLMCU_ROPE_THETA 500000.0f" in header and "#define LLMCU_NORM_EPS 0.000001f" in header
    from llmcu.device.protocol import parse

    for prompt, steps, temperature, seed in (("Once", 100, 0.0, 1), ("The cat", 127, 1.0, 5)):
        out = parse(_run(program, "-p", prompt, "-n", str(steps), "-t", repr(temperature), "-s", str(seed)))
        assert out.token_sequence() == _oracle(ckpt, tok, prompt, steps, temperature, seed)


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="qemu-aarch64 or the aarch64 cross compiler missing")  # fmt: skip
def test_own_model_gguf_on_the_rzv2l_equals_the_oracle(own_model, tmp_path: Path, stories260k: Path) -> None:
    ckpt, tok, gguf_path, _ = own_model
    args = ["target=rzv2l", f"model={gguf_path}", "quant=fp32", f"build_dir={tmp_path}", "run", "hil=qemu",
            "prompt=Once", "steps=100", "temperature=0", f"log_dir={tmp_path / 'logs'}"]  # fmt: skip
    result = scons(args, stories260k.parent)
    assert "100 tokens" in result.stdout
    (log,) = (tmp_path / "logs").iterdir()
    rows = [json.loads(line) for line in (log / "tokens.jsonl").read_text().splitlines()]
    tokens = [rows[0]["token"], *(row["next"] for row in rows)]
    assert tokens == _oracle(ckpt, tok, "Once", 100, 0.0)


# ---- sentencepiece ----

CORPUS = [
    "Once upon a time, there was a little girl named Lily.",
    "She liked to play in the park with her friends and her dog.",
    "  Two spaces,\ttabs, and\nnew lines stay as they are.",
    "Ünïcödé, naïve café, 東京, emoji 🙂 and ☃ fall back to bytes when they are not pieces.",
    "",
    " leading space and trailing space ",
]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory, stories260k: Path) -> Path:
    spm = pytest.importorskip("sentencepiece")
    root = tmp_path_factory.mktemp("spm")
    text = root / "text.txt"
    lines = [line for line in (CORPUS * 3) if line.strip()]
    lines += [f"The {word} went to the {place} and saw a {thing}." for word in ("boy", "girl", "cat", "dog")
              for place in ("park", "shop", "river") for thing in ("ball", "bird", "tree")]  # fmt: skip
    text.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(root / "tokenizer"), vocab_size=400, model_type="bpe", byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True, add_dummy_prefix=True,
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    return root / "tokenizer.model"


def test_sentencepiece_vocabulary_encodes_as_sentencepiece(spm_model: Path) -> None:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    tok = sources.read_vocab(spm_model, processor.get_piece_size())
    assert tok.pieces[1] == b"\n<s>\n" and tok.pieces[3 + 0x41] == b"<0x41>"
    for line in [*CORPUS, "Lily and the dog 123 went home."]:
        assert tok.encode(line, bos=False, eos=False) == processor.encode(line), line


def test_sentencepiece_vocabulary_in_the_runtime(spm_model: Path, tmp_path: Path, stories260k: Path) -> None:
    """The C encoder of a build with the converted vocabulary gives sentencepiece's ids for the prompt."""
    import sentencepiece

    from llmcu.core.config import ModelConfig

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    cfg = ModelConfig(32, 64, 1, 4, 4, processor.get_piece_size(), 256, True)
    folder = write_hf_folder(tmp_path / "tiny-hf", random_checkpoint(cfg, seed=3))
    shutil.copy(spm_model, folder / "tokenizer.model")
    scons(["target=host", f"model={folder}", "quant=fp32", f"build_dir={tmp_path / 'build'}"], stories260k.parent)
    (program,) = (tmp_path / "build" / "host").glob("*/llmcu")
    from llmcu.device.protocol import parse

    for line in CORPUS[:4]:
        out = parse(_run(program, "-p", line, "-n", "200", "-t", "0"))
        ids = [1, *processor.encode(line)]
        assert out.token_sequence()[: len(ids)] == ids, line


# ---- bad input ----


def test_bad_files_are_clear_errors(tmp_path: Path, original, converted: dict[str, Path]) -> None:
    ckpt, tok = original
    data = converted["gguf"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.gguf: not a readable GGUF file, truncated or corrupt"):
        sources.read_model(cut)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:40])
    with pytest.raises(CheckpointError, match=r"header\.gguf: not a readable GGUF file, truncated or corrupt \(40 "):
        sources.read_model(header_only)
    with pytest.raises(CheckpointError, match="architecture 'gpt2'"):
        sources.read_model(write_gguf(tmp_path / "gpt2.gguf", ckpt, tok, arch="gpt2"))
    scaled = write_gguf(tmp_path / "scaled.gguf", ckpt, tok, extra={"llama.rope.scaling.type": "linear"})
    with pytest.raises(CheckpointError, match="RoPE scaling"):
        sources.read_model(scaled)

    folder = converted["hf"]
    weights = (folder / "model.safetensors").read_bytes()
    broken = tmp_path / "broken-hf"
    broken.mkdir()
    shutil.copy(folder / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(weights[: len(weights) - 1000])
    with pytest.raises(CheckpointError, match=r"outside the file's [\d,]+ bytes \(a truncated download\?\)"):
        sources.read_model(broken)
    (broken / "model.safetensors").write_bytes(struct.pack("<Q", 12) + b"not json!!!!")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        sources.read_model(broken)
    for change, message in (
        ({"model_type": "mistral"}, "Llama architecture"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "RoPE scaling"),
        ({"head_dim": 16}, "head_dim 16 differs"),
        ({"hidden_act": "gelu"}, "SwiGLU"),
    ):
        config = json.loads((folder / "config.json").read_text())
        (broken / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(CheckpointError, match=message):
            sources.read_model(broken)
    with pytest.raises(TokenizerError, match="does not belong to this model"):
        sources.read_vocab(converted["gguf"], 32000)


def test_scons_names_what_it_cannot_read(tmp_path: Path, stories260k: Path) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    result = scons(["target=host", f"model={empty}"], stories260k.parent, check=False)
    assert result.returncode != 0 and "without config.json" in result.stderr
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 64)
    result = scons(["target=host", f"model={junk}", f"build_dir={tmp_path / 'b'}"], stories260k.parent, check=False)
    assert result.returncode != 0 and "llmcu: error:" in result.stderr and "junk.gguf" in result.stderr
    assert isinstance(CheckpointError("x"), LlmcuError)


def test_gguf_prompt_flags_are_honoured_by_the_encoder_and_the_runtime(tmp_path: Path, original) -> None:
    """tokenizer.ggml.add_space_prefix and add_bos_token false (llama.cpp honours both): no dummy-prefix space and
    no BOS before the prompt, in the Python encoder and in a host build's program, whose run equals the oracle's."""
    from llmcu.device.protocol import parse
    from llmcu.model import oracle
    from llmcu.model.reference import Reference
    from support.build import scons

    ckpt, tok = original
    path = write_gguf(tmp_path / "flags.gguf", ckpt, tok, add_space_prefix=False, add_bos=False)
    read = sources.read_vocab(path, 512)
    assert (read.add_space_prefix, read.add_bos) == (False, False) and read != tok
    ids = read.encode_prompt("Once upon a time")
    assert ids[0] not in (1, tok.lookup(b" ")) and read.decode_all(ids) == b"Once upon a time"  # no BOS, no " "
    assert tok.encode_prompt("Once upon a time")[:1] == [1]
    assert read.encode_prompt("") == [1]  # an empty prompt still starts from BOS
    assert sources.read_vocab(write_gguf(tmp_path / "plain.gguf", ckpt, tok), 512).add_bos  # absent: on

    scons([f"model={path}", f"build_dir={tmp_path / 'build'}"], tmp_path)
    (program,) = (tmp_path / "build" / "host").glob("*/llmcu")
    header = (program.parent / "gen" / "model_config.h").read_text()
    assert "#define LLMCU_ADD_SPACE_PREFIX 0" in header and "#define LLMCU_ADD_BOS 0" in header
    run = parse(subprocess.run([str(program), "-p", "Once upon a time", "-n", "40", "-t", "0"],
                               capture_output=True, check=True).stdout)  # fmt: skip
    expected = oracle.generate(Reference.from_checkpoint(ckpt, "fp32"), read, "Once upon a time", 40, 0.0, 0.9, 1)
    assert run.token_sequence() == expected.tokens[: len(run.token_sequence())]
    assert run.text == expected.text and run.text.startswith(b"Once upon a time")


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="a .gguf file whose first bytes are not GGUF's magic (a cut or corrupt download)",
    sees=r"model\.gguf: not a GGUF file: it starts with b'GG\\x01F', where a GGUF file starts with b'GGUF'",
)
def test_a_gguf_file_without_its_magic_is_named_so_not_read_as_llama2c(tmp_path: Path, sees) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GG\x01F" + bytes(60))
    with pytest.raises(CheckpointError) as caught:
        sources.read_model(path)
    sees(str(caught.value))
