"""The KV cache's element types (kv_type=f32|f16|q8): the C binary16 conversion against numpy, the attention
kernels against the contract, host builds against the Python reference, the cache's bytes, and quality."""

from __future__ import annotations

import ctypes
import json
import math
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from llmcu.builder.codegen import generate as generate_sources
from llmcu.builder.options import validate
from llmcu.builder.settings import configure, options_table
from llmcu.core.config import ModelConfig
from llmcu.core.errors import OptionError
from llmcu.device.protocol import parse
from llmcu.model.checkpoint import random_checkpoint, read_checkpoint
from llmcu.model.kvcache import KV_TYPES, from_f16_bits, kv_cache_bytes, quantize_heads, stored, to_f16_bits
from llmcu.model.oracle import GenerationResult, generate
from llmcu.model.quality import compare, fp32_baseline
from llmcu.model.quantize import QuantPlan
from llmcu.model.reference import Reference, c_math, sequential_sum, softmax
from llmcu.model.tokenizer import read_tokenizer
from llmcu.platform.targets import CONTRACT_CFLAGS, WARNING_CFLAGS
from support.build import ROOT, scons

F32 = np.float32
KERNELS = ROOT / "runtime_c" / "kernels" / "ref"
# (weight quant, kv_type): one of each cache type and of each weight type in the default run, all four with -m slow
BUILDS = [("fp32", "f16"), pytest.param("fp32", "q8", marks=pytest.mark.slow),
          pytest.param("q8", "f16", marks=pytest.mark.slow), ("q8", "q8")]  # fmt: skip

HARNESS = """
#include <stdint.h>
#include "kernels/kernels.h"

void to_half_n(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) {
        dst[i] = f32_to_f16(src[i]);
    }
}

void from_half_n(float *dst, const uint16_t *src, int n) {
    for (int i = 0; i < n; i++) {
        dst[i] = f16_to_f32(src[i]);
    }
}
"""


# --- the C kernels, through a shared library ---------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The reference attention/quant/ops kernels plus two loops over the conversions, as a shared library,
    compiled with the flags every target gets."""
    work = tmp_path_factory.mktemp("kvkernels")
    (work / "harness.c").write_text(HARNESS)
    library = work / "libkv.so"
    sources = [work / "harness.c", KERNELS / "attention.c", KERNELS / "ops.c", KERNELS / "quant.c"]
    subprocess.run(
        ["gcc", *CONTRACT_CFLAGS, *WARNING_CFLAGS, "-Werror", "-O2", "-fPIC", "-shared",
         f"-I{ROOT / 'runtime_c'}", *map(str, sources), "-lm", "-o", str(library)],
        check=True, capture_output=True,
    )  # fmt: skip
    lib = ctypes.CDLL(str(library))
    ptr = ctypes.c_void_p
    lib.to_half_n.argtypes = [ptr, ptr, ctypes.c_int]
    lib.from_half_n.argtypes = [ptr, ptr, ctypes.c_int]
    lib.kv_store_f16.argtypes = [ptr, ptr, ctypes.c_int]
    lib.quantize_activations.argtypes = [ptr, ptr, ptr, ctypes.c_int, ctypes.c_int]
    lib.attention_head_f16.argtypes = [ptr] * 5 + [ctypes.c_int] * 3
    lib.attention_head_q8.argtypes = [ptr] * 7 + [ctypes.c_int] * 4
    return lib


def _address(array: np.ndarray, index: int = 0) -> int:
    assert array.flags.c_contiguous
    return array.ctypes.data + index * array.itemsize


def c_to_half(lib: ctypes.CDLL, values: np.ndarray) -> np.ndarray:
    values = np.ascontiguousarray(values, dtype=F32)
    out = np.empty(values.size, dtype=np.uint16)
    lib.to_half_n(_address(out), _address(values), values.size)
    return out


def c_from_half(lib: ctypes.CDLL, bits: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(bits, dtype=np.uint16)
    out = np.empty(bits.size, dtype=F32)
    lib.from_half_n(_address(out), _address(bits), bits.size)
    return out


def _subnormal_boundaries() -> np.ndarray:
    """float32 bit patterns around every rounding boundary of the binary16 subnormal range: for each float
    exponent that lands there, every kept-bit pattern with the dropped bits at 0, 1, just below, at and just
    above the halfway point, and all ones."""
    patterns = []
    for exponent in range(-26, -14):
        shift = -exponent - 1  # bits of the 24-bit significand that fall below 2^-24
        half = 1 << (shift - 1)
        kept = np.arange(0, 1 << max(24 - shift, 0), dtype=np.uint64) << np.uint64(shift)
        for rest in (0, 1, half - 1, half, half + 1, 2 * half - 1):
            significand = kept + np.uint64(rest)
            significand = significand[(significand >= 1 << 23) & (significand < 1 << 24)]
            patterns.append(((exponent + 127) << 23) | (significand & np.uint64(0x7FFFFF)))
    bits = np.concatenate(patterns).astype(np.uint32)
    return np.concatenate([bits, bits | np.uint32(0x80000000)])


def _encode_cases() -> np.ndarray:
    """Every sign/exponent/top-10-mantissa-bit combination with the 13 dropped bits at 0, 1, below, at and
    above the tie, and all ones (every binary16 bucket and tie at every exponent); the subnormal range's
    boundaries; named edge values; and a million random bit patterns."""
    upper = np.arange(1 << 19, dtype=np.uint32) << np.uint32(13)
    lows = np.array([0, 1, 0x0FFF, 0x1000, 0x1001, 0x1FFF], dtype=np.uint32)
    structured = (upper[:, None] | lows[None, :]).reshape(-1)
    named = np.array(
        [0.0, -0.0, 65504.0, 65519.996, 65520.0, 65536.0, 1e30, np.finfo(F32).max, 2.0**-14, 2.0**-24,
         2.0**-25, 2.0**-26, 1.5 * 2.0**-25, np.finfo(F32).tiny, 1e-45, 1.0, 1.0 + 2.0**-11, np.inf, -np.inf],
        dtype=F32,
    ).view(np.uint32)  # fmt: skip
    nans = np.array([0x7FC00000, 0x7F800001, 0x7FA00000, 0xFFFFFFFF, 0xFF800001, 0x7F801FFF], dtype=np.uint32)
    random = np.random.default_rng(20260101).integers(0, 1 << 32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([structured, _subnormal_boundaries(), named, named ^ np.uint32(0x80000000), nans,
                           random]).view(F32)  # fmt: skip


def test_half_decode_matches_numpy_for_every_pattern(kernels: ctypes.CDLL) -> None:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ours = c_from_half(kernels, bits)
    assert np.array_equal(ours.view(np.uint32), from_f16_bits(bits).view(np.uint32))  # NaN payloads too


def test_half_encode_is_numpys_round_to_nearest_even(kernels: ctypes.CDLL) -> None:
    values = _encode_cases()
    ours = c_to_half(kernels, values)
    numpy_bits = to_f16_bits(values)
    nan = np.isnan(values)
    assert np.array_equal(ours[~nan], numpy_bits[~nan])
    # A NaN stays a NaN of the same sign: quiet bit set, the next 9 payload bits kept.
    bits = values[nan].view(np.uint32)
    expected = ((bits >> 16) & 0x8000) | 0x7E00 | ((bits >> 13) & 0x1FF)
    assert nan.sum() > 6 and np.array_equal(ours[nan], expected.astype(np.uint16))
    # kv_store_f16 is the same conversion.
    stored_bits = np.empty(values.size, dtype=np.uint16)
    kernels.kv_store_f16(_address(stored_bits), _address(values), values.size)
    assert np.array_equal(stored_bits, ours)


def test_half_round_trip_is_exact(kernels: ctypes.CDLL) -> None:
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = (bits & 0x7C00) != 0x7C00
    halves = bits[finite | ((bits & 0x3FF) == 0)]  # every finite value and the infinities
    assert np.array_equal(c_to_half(kernels, c_from_half(kernels, halves)), halves)


@pytest.mark.parametrize("kv_type", ["f16", "q8"])
def test_attention_kernels_follow_the_contract(kernels: ctypes.CDLL, kv_type: str) -> None:
    """Store a random cache (2 kv heads of 8, 37 positions) the C way, attend with each kv head's slice,
    and compare with the contract computed in numpy on the read-back keys and values."""
    n_pos, n_kv_heads, head_size = 37, 2, 8
    kv_dim = n_kv_heads * head_size
    rng = np.random.default_rng(5)
    keys = (rng.standard_normal((n_pos, kv_dim)) * 3).astype(F32)
    values = rng.standard_normal((n_pos, kv_dim)).astype(F32)
    keys[3, :head_size] = 0.0  # an all-zero q8 group
    cmath = c_math("auto")
    if kv_type == "f16":
        k_store = np.empty((n_pos, kv_dim), dtype=np.uint16)
        v_store = np.empty((n_pos, kv_dim), dtype=np.uint16)
        kernels.kv_store_f16(_address(k_store), _address(keys), keys.size)
        kernels.kv_store_f16(_address(v_store), _address(values), values.size)
    else:
        k_store, v_store = np.empty((n_pos, kv_dim), np.int8), np.empty((n_pos, kv_dim), np.int8)
        k_scales, v_scales = np.empty((n_pos, n_kv_heads), F32), np.empty((n_pos, n_kv_heads), F32)
        for source, q, s in ((keys, k_store, k_scales), (values, v_store, v_scales)):
            for pos in range(n_pos):  # as transformer.c stores one position's row
                kernels.quantize_activations(_address(q, pos * kv_dim), _address(s, pos * n_kv_heads),
                                             _address(source, pos * kv_dim), kv_dim, head_size)  # fmt: skip
        expected_q, expected_scales = quantize_heads(keys, head_size)
        assert np.array_equal(k_store, expected_q) and np.array_equal(k_scales, expected_scales)
    read_keys, read_values = stored(keys, kv_type, head_size), stored(values, kv_type, head_size)
    for kv_head in range(n_kv_heads):
        q = rng.standard_normal(head_size).astype(F32)
        out, att = np.empty(head_size, F32), np.empty(n_pos, F32)
        offset = kv_head * head_size
        if kv_type == "f16":
            kernels.attention_head_f16(_address(out), _address(att), _address(q), _address(k_store, offset),
                                       _address(v_store, offset), kv_dim, head_size, n_pos)  # fmt: skip
        else:
            kernels.attention_head_q8(_address(out), _address(att), _address(q), _address(k_store, offset),
                                      _address(k_scales, kv_head), _address(v_store, offset),
                                      _address(v_scales, kv_head), kv_dim, n_kv_heads, head_size, n_pos)  # fmt: skip
        head_keys = read_keys[:, offset : offset + head_size]
        head_values = read_values[:, offset : offset + head_size]
        scores = (sequential_sum(head_keys * q, axis=1) / np.sqrt(F32(head_size))).astype(F32)
        weights = softmax(scores, cmath)
        expected = sequential_sum(weights[:, None] * head_values, axis=0)
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)), (kv_type, kv_head)


def test_python_storage_rules() -> None:
    x = np.array([1.0, -2.5, 65520.0, 1e-8, 0.1, 3.0, 0.0, -0.0], dtype=F32)
    assert np.array_equal(stored(x, "f32", 4), x)
    f16 = stored(x, "f16", 4)
    assert f16[0] == 1.0 and f16[1] == -2.5 and np.isinf(f16[2]) and f16[3] == 0.0  # 1e-8 < 2^-25
    assert f16[4] == F32(np.float16(0.1))
    q8 = stored(x, "q8", 4)
    scale = F32(F32(65520.0) / F32(127))
    assert q8[2] == F32(F32(127) * scale) and q8[0] == 0.0  # 1.0 / scale rounds to 0 in a group with 65520
    assert np.all(stored(np.zeros(8, F32), "q8", 4) == 0)


# --- sizes, options, generated files -----------------------------------------------------------------------


def test_kv_cache_bytes() -> None:
    stories260k = ModelConfig(64, 172, 5, 8, 4, 512, 512, True)
    figures = {kv_type: kv_cache_bytes(stories260k, 512, kv_type) for kv_type in KV_TYPES}
    assert figures == {"f32": 655_360, "f16": 327_680, "q8": 163_840 + 81_920, "q16": 327_680}
    gqa = ModelConfig(48, 100, 2, 6, 2, 512, 48, False)
    for config in (stories260k, gqa, ModelConfig(288, 768, 6, 6, 6, 32000, 256, True)):
        for kv_type in KV_TYPES:  # one formula, at three sizes (q16 has room for a multiple of 8 positions)
            positions = 104 if kv_type == "q16" else 100
            assert kv_cache_bytes(config, 100, kv_type) == positions * kv_cache_bytes(config, 8, kv_type) // 8


def test_kv_type_option_and_variant_names() -> None:
    option = next(option for option in options_table() if option.name == "kv_type")
    assert option.default == "auto" and option.allowed == ("auto", "f32", "f16", "q8", "q16")

    def variant_name(quant: str, seq_len: int = 0, kv_type: str = "auto") -> str:
        options = {"model": "260k", "quant": quant, "seq_len": str(seq_len), "kv_type": kv_type}
        return configure(options, download=False).out_dir.name

    assert variant_name("q8") == "260k-q8"
    assert variant_name("q8", 0, "f32") == "260k-q8-kvf32"  # not auto's folder: auto is q16 or q8 here
    assert variant_name("fp32", 0, "f32") == variant_name("fp32", 0) == "260k-fp32"
    assert variant_name("q8", 0, "auto") == "260k-q8"
    assert variant_name("q8", 128, "f16") == "260k-q8-ctx128-kvf16"
    assert variant_name("fp32", 0, "q8") == "260k-fp32-kvq8"


def test_unknown_kv_type_is_rejected(tmp_path: Path, tok512: Path) -> None:
    config = ModelConfig(16, 40, 1, 4, 2, 512, 8, True)
    ckpt = random_checkpoint(config, seed=1)
    with pytest.raises(OptionError, match="f16"):
        Reference(ckpt, kv_type="bf16")
    with pytest.raises(OptionError, match="q8"):
        generate_sources(ckpt, read_tokenizer(tok512, 512), QuantPlan(), tmp_path, model_name="x", kv_type="f8")
    with pytest.raises(OptionError, match=r"kv_type=.f8. is not allowed; choose one of: auto, f32, f16, q8, q16"):
        validate({"kv_type": "f8"}, options_table())


def test_generated_header_names_the_type_and_size(tmp_path: Path, tok512: Path) -> None:
    config = ModelConfig(16, 40, 2, 4, 2, 512, 32, False)
    tok = read_tokenizer(tok512, 512)
    for kv_type, code in (("f32", 0), ("f16", 1), ("q8", 2)):
        out = tmp_path / kv_type
        model = generate_sources(random_checkpoint(config), tok, QuantPlan(), out, model_name="x", seq_len=16,
                                 kv_type=kv_type)  # fmt: skip
        header = (out / "model_config.h").read_text()
        assert f"#define LLMCU_KV_TYPE {code}\n" in header
        assert f"#define LLMCU_KV_CACHE_BYTES {model.kv_cache_bytes()}u" in header
        assert model.kv_cache_bytes() == kv_cache_bytes(config, 16, kv_type)


# --- host builds of stories260K ------------------------------------------------------------------------------


def _build(build_root: Path, models_dir: Path, quant: str, kv_type: str) -> Path:
    scons(["target=host", "model=260k", f"quant={quant}", f"kv_type={kv_type}", f"build_dir={build_root}"], models_dir)
    program = build_root / "host" / f"260k-{quant}-kv{kv_type}" / "llmcu"
    assert program.is_file()
    return program


@pytest.fixture(scope="module")
def programs(
    tmp_path_factory: pytest.TempPathFactory, stories260k: Path
) -> Iterator[dict[tuple[str, str], Future[Path]]]:
    """The builds the selected tests use, made one after the other in the background while the tests compute
    the oracle's tokens (one scons at a time: every scons run shares the project's .sconsign database)."""
    build_root = tmp_path_factory.mktemp("kvbuild")
    builder = ThreadPoolExecutor(max_workers=1)
    try:
        yield _Builds(builder, build_root, stories260k.parent)
    finally:
        builder.shutdown(wait=True, cancel_futures=True)  # a partial run does not wait for unused builds


class _Builds(dict):
    """Each build submitted when a test first asks for it (the slow-marked ones only when they run)."""

    def __init__(self, builder: ThreadPoolExecutor, root: Path, models: Path) -> None:
        super().__init__()
        self.builder, self.root, self.models = builder, root, models

    def __missing__(self, key: tuple[str, str]) -> Future[Path]:
        self[key] = self.builder.submit(_build, self.root, self.models, *key)
        return self[key]


def _run(program: Path, case: dict) -> bytes:
    args = [str(program), "-p", case["prompt"], "-n", str(case["steps"]), "-t", repr(case["temperature"]),
            "-P", repr(case["topp"]), "-s", str(case["seed"])]  # fmt: skip
    return subprocess.run(args, capture_output=True, check=True, timeout=120).stdout


# With fp32 weights every golden case runs in full (up to 256 positions: long-context attention over the
# converted cache); with q8 weights, whose matmuls are tested in full by test_host_build.py, each golden case
# runs its first Q8_WEIGHT_STEPS positions, which keeps this file's time down.
Q8_WEIGHT_STEPS = 64


@pytest.mark.parametrize(("quant", "kv_type"), BUILDS)
def test_host_build_equals_the_python_reference(
    quant: str,
    kv_type: str,
    programs: dict[tuple[str, str], Future[Path]],
    golden_cases: list[dict],
    stories260k: Path,
    tok512: Path,
) -> None:
    build = programs[quant, kv_type]  # started now, built in the background while the oracle runs
    ckpt = read_checkpoint(stories260k)
    tok = read_tokenizer(tok512, ckpt.config.vocab_size)
    model = Reference.from_checkpoint(ckpt, quant=quant, group_size=32, kv_type=kv_type)
    cases = [dict(case, steps=min(case["steps"], Q8_WEIGHT_STEPS)) if quant == "q8" else case for case in golden_cases]
    oracles = [
        generate(model, tok, case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"])
        for case in cases
    ]
    program = build.result()
    for case, oracle in zip(cases, oracles, strict=True):
        out = parse(_run(program, case))
        assert out.ok and out.header["quant"] == quant
        assert out.token_sequence() == oracle.tokens, (quant, kv_type, case["prompt"])
        assert out.text == oracle.text


def _section_size(obj: Path, name: str) -> int:
    with obj.open("rb") as handle:
        section = ELFFile(handle).get_section_by_name(name)
        return 0 if section is None else section.data_size


@pytest.mark.parametrize(("quant", "kv_type"), BUILDS)
def test_cache_bytes_in_header_report_and_object(
    quant: str, kv_type: str, programs: dict[tuple[str, str], Future[Path]]
) -> None:
    """The generated figure is what the compiled runtime really reserves in .bss.llmcu_kv."""
    out = programs[quant, kv_type].result().parent
    expected = {"f16": 327_680, "q8": 245_760}[kv_type]
    header = (out / "gen" / "model_config.h").read_text()
    assert re.search(rf"#define LLMCU_KV_CACHE_BYTES {expected}u\n", header)
    report = json.loads((out / "quant_report.json").read_text())
    assert report["kv_type"] == kv_type and report["kv_cache_bytes"] == expected
    assert _section_size(out / "obj" / "runtime_c" / "transformer.o", ".bss.llmcu_kv") == expected


# --- quality ---------------------------------------------------------------------------------------------------


# Teacher-forced over 256 greedy tokens from "Once upon a time" (fp32 weights), measured: f16 top-1 1.000,
# mean KL 6e-7; q8 top-1 0.988, mean KL 7.5e-4. (q8 weights alone: 0.980 and 6e-4, tests/model/test_quality.py.)
KV_BOUNDS = {"f16": (0.995, 1e-4), "q8": (0.95, 0.005)}


@pytest.fixture(scope="module")
def baseline(stories260k: Path, tok512: Path) -> GenerationResult:
    return fp32_baseline(read_checkpoint(stories260k), read_tokenizer(tok512, 512), steps=256)


@pytest.mark.parametrize("kv_type", ["f16", "q8"])
def test_kv_type_stays_close_to_fp32(kv_type: str, baseline: GenerationResult, stories260k: Path, tok512: Path) -> None:
    ckpt, tok = read_checkpoint(stories260k), read_tokenizer(tok512, 512)
    report = compare(ckpt, tok, "fp32", 32, steps=256, kv_type=kv_type, baseline=baseline)
    min_top1, max_kl = KV_BOUNDS[kv_type]
    assert report.kv_type == kv_type and report.positions == 256 - 5 + 1
    assert report.teacher_forced_top1 >= min_top1, report
    assert 0 < report.mean_kl <= max_kl, report
    assert math.isfinite(report.max_kl)
