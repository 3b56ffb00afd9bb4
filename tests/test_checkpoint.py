"""Checkpoint reading, writing and validation for llama2.c's v0, v1 and v2 formats.

Layouts are checked against files built here by hand with ``struct`` (not with the writer under test), and
the real stories260K file pins the reader to values computed once with an independent ``np.fromfile``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcu.checkpoint import (
    MAGIC,
    PRESETS,
    Checkpoint,
    checkpoint_bytes,
    detect_format,
    expected_file_size,
    main,
    nonfinite_report,
    parse_checkpoint,
    random_checkpoint,
    read_checkpoint,
    rope_tables,
    write_checkpoint,
)
from llmcu.config import LAYER_MATRICES, NORM_NAMES, ModelConfig
from llmcu.errors import CheckpointError

ROOT = Path(__file__).resolve().parent.parent

# dim 8, hidden 12, 2 layers, 2 heads, 1 kv head (head size 4, kv_dim 4), vocab 16, seq 4.
# Every matrix has a multiple of 16 values, and wk/wv have only 32, so a group size of 64 must be refused.
TINY = ModelConfig(8, 12, 2, 2, 1, 16, 4, True)
TINY_UNSHARED = dataclasses.replace(TINY, shared_classifier=False)

# stories260K.bin, computed once with np.fromfile slices of the file (independent of the reader).
S260K_PARAMS = 260032
S260K_TOK_SUM = -752.3677446640068
S260K_TOK_ABS_SUM = 7820.582960873879
S260K_RMS_FINAL_SUM = 115.95276230573654
S260K_ALL_SUM = -14.691442941950697
S260K_ALL_SQUARES = 8359.392599290753
S260K_TOK_FIRST = (-0.29474878, 0.5618956, 0.17542253)


def _f32(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def _params(config: ModelConfig, vocab_size: int | None = None) -> list[int]:
    vocab = config.vocab_size if vocab_size is None else vocab_size
    c = config
    return [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, vocab, c.seq_len]


def _versioned_header(config: ModelConfig, version: int, group_size: int | None = None) -> bytes:
    header = struct.pack("<Ii7iB", MAGIC, version, *_params(config), int(config.shared_classifier))
    if group_size is not None:
        header += struct.pack("<i", group_size)
    return header + bytes(256 - len(header))


def _q8_body(config: ModelConfig, group_size: int, rng: np.random.Generator) -> tuple[bytes, dict]:
    """A v2 body built from the spec, and the weights a reader must produce from it."""
    shapes = config.tensor_shapes()
    weights = {name: rng.normal(1.0, 0.1, shapes[name]).astype(np.float32) for name in NORM_NAMES}
    parts = [_f32(weights[name]) for name in NORM_NAMES]

    def matrix(numel: int) -> np.ndarray:
        q = rng.integers(-127, 128, numel, dtype=np.int8)
        scales = rng.uniform(0.001, 0.01, numel // group_size).astype(np.float32)
        parts.append(q.tobytes() + _f32(scales))
        return (q.reshape(-1, group_size).astype(np.float32) * scales[:, None]).reshape(-1)

    def matrix_of_shape(shape: tuple[int, ...]) -> np.ndarray:
        return matrix(int(np.prod(shape))).reshape(shape)

    weights["tok_embeddings"] = matrix_of_shape(shapes["tok_embeddings"])
    for name in LAYER_MATRICES:
        weights[name] = np.stack([matrix_of_shape(shapes[name][1:]) for _ in range(config.n_layers)])
    if "wcls" in shapes:
        weights["wcls"] = matrix_of_shape(shapes["wcls"])
    return b"".join(parts), weights


def _valid_file(version: int, config: ModelConfig = TINY, group_size: int = 16) -> bytes:
    return checkpoint_bytes(random_checkpoint(config, seed=version), version, group_size)


def _assert_same_weights(got: Checkpoint, want: dict[str, np.ndarray]) -> None:
    assert list(got.weights) == list(got.config.tensor_shapes())
    assert set(got.weights) == set(want)
    for name, tensor in want.items():
        assert got.weights[name].dtype == np.float32, name
        np.testing.assert_array_equal(got.weights[name], tensor, err_msg=name)


# --- stories260K -----------------------------------------------------------------------------------------


def test_stories260k_config(stories260k: Path) -> None:
    ckpt = read_checkpoint(stories260k)
    assert ckpt.config == ModelConfig(64, 172, 5, 8, 4, 512, 512, True) == PRESETS["260k"]
    assert ckpt.format == "v0"
    assert ckpt.path == stories260k
    assert ckpt.source_group_size is None
    assert ckpt.config.parameter_count() == S260K_PARAMS
    assert expected_file_size(ckpt.config) == stories260k.stat().st_size == 1056540
    assert detect_format(stories260k) == "v0"


def test_stories260k_shapes(stories260k: Path) -> None:
    ckpt = read_checkpoint(stories260k)
    assert {name: w.shape for name, w in ckpt.weights.items()} == ckpt.config.tensor_shapes()
    assert all(w.dtype == np.float32 and w.flags.writeable for w in ckpt.weights.values())


def test_stories260k_checksums(stories260k: Path) -> None:
    weights = read_checkpoint(stories260k).weights
    tok = weights["tok_embeddings"].astype(np.float64)
    assert tok.sum() == pytest.approx(S260K_TOK_SUM, rel=1e-9)
    assert np.abs(tok).sum() == pytest.approx(S260K_TOK_ABS_SUM, rel=1e-9)
    assert weights["rms_final"].astype(np.float64).sum() == pytest.approx(S260K_RMS_FINAL_SUM, rel=1e-9)
    np.testing.assert_array_equal(weights["tok_embeddings"][0, :3], np.array(S260K_TOK_FIRST, np.float32))
    flat = np.concatenate([w.reshape(-1) for w in weights.values()]).astype(np.float64)
    assert flat.size == S260K_PARAMS
    assert flat.sum() == pytest.approx(S260K_ALL_SUM, rel=1e-6)
    assert (flat**2).sum() == pytest.approx(S260K_ALL_SQUARES, rel=1e-9)


def test_stories260k_rewrites_to_the_same_weights(stories260k: Path) -> None:
    raw = stories260k.read_bytes()
    data = checkpoint_bytes(read_checkpoint(stories260k), version=0)
    weights_end = 28 + 4 * S260K_PARAMS
    assert len(data) == len(raw)
    assert data[:weights_end] == raw[:weights_end]
    # The RoPE tables that follow agree with llama2.c's export to within float32 rounding of cos/sin.
    np.testing.assert_allclose(
        np.frombuffer(data[weights_end:], "<f4"), np.frombuffer(raw[weights_end:], "<f4"), rtol=0, atol=1e-6
    )


# --- layouts, checked against hand-built files -----------------------------------------------------------


def test_v0_unshared_layout_skips_rope_tables() -> None:
    ckpt = random_checkpoint(TINY_UNSHARED, seed=3)
    shapes = TINY_UNSHARED.tensor_shapes()
    body = [_f32(ckpt.weights[name]) for name in shapes if name != "wcls"]
    junk_tables = _f32(np.full(TINY.seq_len * TINY.head_size, 7.0))  # readers must not care what is here
    data = struct.pack("<7i", *_params(TINY, -TINY.vocab_size)) + b"".join(body) + junk_tables
    data += _f32(ckpt.weights["wcls"])
    got = parse_checkpoint(data)
    assert got.config == TINY_UNSHARED
    _assert_same_weights(got, ckpt.weights)
    assert len(checkpoint_bytes(ckpt, 0)) == len(data)


@pytest.mark.parametrize("config", [TINY, TINY_UNSHARED], ids=["shared", "unshared"])
def test_v1_layout(config: ModelConfig) -> None:
    ckpt = random_checkpoint(config, seed=4)
    order = [*NORM_NAMES, "tok_embeddings", *LAYER_MATRICES] + ([] if config.shared_classifier else ["wcls"])
    data = _versioned_header(config, 1) + b"".join(_f32(ckpt.weights[name]) for name in order)
    got = parse_checkpoint(data)
    assert (got.config, got.format, got.source_group_size) == (config, "v1", None)
    _assert_same_weights(got, ckpt.weights)
    assert checkpoint_bytes(ckpt, version=1) == data


@pytest.mark.parametrize("config", [TINY, TINY_UNSHARED], ids=["shared", "unshared"])
@pytest.mark.parametrize("group_size", [1, 8, 32])
def test_v2_layout(config: ModelConfig, group_size: int) -> None:
    body, weights = _q8_body(config, group_size, np.random.default_rng(group_size))
    got = parse_checkpoint(_versioned_header(config, 2, group_size) + body)
    assert (got.config, got.format, got.source_group_size) == (config, "v2", group_size)
    _assert_same_weights(got, weights)


def test_v2_groups_cross_rows() -> None:
    # wk is (4, 8) per layer: with 32-value groups one scale covers all four rows of the matrix.
    body, weights = _q8_body(TINY, 32, np.random.default_rng(0))
    got = parse_checkpoint(_versioned_header(TINY, 2, 32) + body)
    np.testing.assert_array_equal(got.weights["wk"], weights["wk"])


def test_v2_header_group_size_is_unaligned_after_shared_byte() -> None:
    data = _valid_file(2, group_size=16)
    assert struct.unpack_from("<i", data, 37)[0] == 16
    assert data[41:256] == bytes(215)


# --- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("config", [TINY, TINY_UNSHARED], ids=["shared", "unshared"])
def test_fp32_round_trip_is_exact(tmp_path: Path, version: int, config: ModelConfig) -> None:
    ckpt = random_checkpoint(config, seed=7)
    path = tmp_path / f"model_v{version}.bin"
    write_checkpoint(path, ckpt, version=version)
    got = read_checkpoint(path)
    assert (got.config, got.format, got.path) == (config, f"v{version}", path)
    _assert_same_weights(got, ckpt.weights)
    assert path.stat().st_size == expected_file_size(config, version)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def _assert_within_q8_error(got: np.ndarray, want: np.ndarray, group_size: int) -> None:
    # Per matrix, per group of the flattened matrix: |error| <= scale / 2 = max|w| / 254.
    matrices = want.reshape(-1, *want.shape[-2:]) if want.ndim == 3 else want[None]
    for got_m, want_m in zip(got.reshape(matrices.shape), matrices, strict=True):
        groups = want_m.reshape(-1, group_size).astype(np.float64)
        bound = np.abs(groups).max(axis=1, keepdims=True) / 254 * (1 + 1e-5) + 1e-12
        assert np.all(np.abs(got_m.reshape(-1, group_size) - groups) <= bound)


@pytest.mark.parametrize("config", [TINY, TINY_UNSHARED], ids=["shared", "unshared"])
@pytest.mark.parametrize("group_size", [8, 16, 32])
def test_v2_round_trip_is_within_q8_error(tmp_path: Path, config: ModelConfig, group_size: int) -> None:
    ckpt = random_checkpoint(config, seed=group_size)
    path = tmp_path / "model_q8.bin"
    write_checkpoint(path, ckpt, version=2, group_size=group_size)
    got = read_checkpoint(path)
    assert (got.config, got.format, got.source_group_size) == (config, "v2", group_size)
    assert path.stat().st_size == expected_file_size(config, 2, group_size)
    for name, want in ckpt.weights.items():
        if name in NORM_NAMES:
            np.testing.assert_array_equal(got.weights[name], want)
        else:
            _assert_within_q8_error(got.weights[name], want, group_size)


def test_v2_writer_handles_zero_matrices() -> None:
    ckpt = random_checkpoint(TINY, seed=1)
    ckpt.weights["wo"][:] = 0
    got = parse_checkpoint(checkpoint_bytes(ckpt, version=2, group_size=16))
    assert not np.any(got.weights["wo"])


def test_write_accepts_config_and_weights_pair() -> None:
    ckpt = random_checkpoint(TINY, seed=2)
    pair = (TINY, {name: w.astype(np.float64) for name, w in ckpt.weights.items()})
    assert checkpoint_bytes(pair, version=1) == checkpoint_bytes(ckpt, version=1)


def test_rope_tables() -> None:
    cos, sin = rope_tables(TINY)
    assert cos.shape == sin.shape == (TINY.seq_len, TINY.head_size // 2)
    np.testing.assert_allclose(cos[0], 1.0)
    np.testing.assert_allclose(sin[0], 0.0)
    freqs = 1.0 / 10000.0 ** (np.arange(2) * 2 / TINY.head_size)
    np.testing.assert_allclose(cos[3], np.cos(3 * freqs), rtol=1e-6)
    np.testing.assert_allclose(sin[3], np.sin(3 * freqs), rtol=1e-6)


# --- writer validation -----------------------------------------------------------------------------------


def test_writer_rejects_mismatched_weights() -> None:
    ckpt = random_checkpoint(TINY, seed=0)
    missing = dict(ckpt.weights)
    del missing["wq"]
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint_bytes((TINY, missing))
    with pytest.raises(CheckpointError, match="unexpected"):
        checkpoint_bytes((TINY, {**ckpt.weights, "wcls": ckpt.weights["tok_embeddings"]}))
    with pytest.raises(CheckpointError, match="shape"):
        checkpoint_bytes((TINY, {**ckpt.weights, "wq": ckpt.weights["wo"][:1]}))
    with pytest.raises(CheckpointError, match="unsupported version 3"):
        checkpoint_bytes(ckpt, version=3)


def test_writer_rejects_group_size_that_does_not_divide() -> None:
    with pytest.raises(CheckpointError, match=r"group size 64 does not divide wk \(32 values"):
        checkpoint_bytes(random_checkpoint(TINY), version=2, group_size=64)
    with pytest.raises(CheckpointError, match="group size 0"):
        checkpoint_bytes(random_checkpoint(TINY), version=2, group_size=0)


def test_writer_refuses_to_quantize_nan() -> None:
    ckpt = random_checkpoint(TINY)
    ckpt.weights["w3"][1, 2, 3] = np.nan
    with pytest.raises(CheckpointError, match=r"w3.*non-finite"):
        checkpoint_bytes(ckpt, version=2, group_size=16)


# --- truncation and trailing bytes -----------------------------------------------------------------------

V0_BOUNDARIES = list(range(0, 29, 4))
V1_BOUNDARIES = [*range(0, 37, 4), 37, 100, 255, 256]
V2_BOUNDARIES = [*V1_BOUNDARIES, 41]


@pytest.mark.parametrize(
    ("version", "cut"),
    [(0, c) for c in V0_BOUNDARIES] + [(1, c) for c in V1_BOUNDARIES] + [(2, c) for c in V2_BOUNDARIES],
)
def test_truncated_at_header_boundary(tmp_path: Path, version: int, cut: int) -> None:
    path = tmp_path / "cut.bin"
    path.write_bytes(_valid_file(version)[:cut])
    with pytest.raises(CheckpointError, match="truncated") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("where", ["middle", "last byte"])
def test_truncated_in_weights(tmp_path: Path, version: int, where: str) -> None:
    data = _valid_file(version, TINY_UNSHARED)
    cut = len(data) // 2 if where == "middle" else len(data) - 1
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=rf"truncated: .* is {len(data)} bytes, the file has {cut}"):
        read_checkpoint(path)


@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("extra", [1, 4, 1000])
def test_trailing_bytes(tmp_path: Path, version: int, extra: int) -> None:
    path = tmp_path / "long.bin"
    path.write_bytes(_valid_file(version) + bytes(extra))
    with pytest.raises(CheckpointError, match=f"{extra} trailing bytes") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)


# --- garbage, bad headers --------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(path)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("This is not a model, it is a shopping list: eggs, milk, flour, sugar.\n" * 20)
    with pytest.raises(CheckpointError, match=r"not a llama2\.c checkpoint"):
        read_checkpoint(path)


def test_tokenizer_is_not_a_checkpoint(tok512: Path) -> None:
    with pytest.raises(CheckpointError):
        read_checkpoint(tok512)


@pytest.mark.parametrize("size", [1, 3, 27, 28, 100, 256, 4096])
def test_random_bytes(tmp_path: Path, size: int) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(size).bytes(size))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "nope.bin")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path)


FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]


def _v0_with(field: str, value: int) -> bytes:
    data = bytearray(_valid_file(0))
    struct.pack_into("<i", data, 4 * FIELDS.index(field), value)
    return bytes(data)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [0, -3, 1 << 23, -(1 << 31), (1 << 31) - 1])
def test_absurd_dims_v0(field: str, value: int) -> None:
    if field == "vocab_size" and value == -3:
        value = -(1 << 23)  # a small negative vocab is legal in v0 (unshared classifier)
    with pytest.raises(CheckpointError, match=f"{field} = "):
        parse_checkpoint(_v0_with(field, value), "bad.bin")


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [0, -1, 1 << 23])
def test_absurd_dims_v1(field: str, value: int) -> None:
    data = bytearray(_valid_file(1))
    struct.pack_into("<i", data, 8 + 4 * FIELDS.index(field), value)
    with pytest.raises(CheckpointError, match=f"{field} = {value} is not in 1\\.\\."):
        parse_checkpoint(bytes(data), "bad.bin")


def test_limits_are_per_field() -> None:
    # Each limit alone is below its bound, but the file cannot be that big: a size error, not a crash.
    with pytest.raises(CheckpointError, match="truncated"):
        parse_checkpoint(_v0_with("n_layers", 1024))
    with pytest.raises(CheckpointError, match="n_layers = 1025"):
        parse_checkpoint(_v0_with("n_layers", 1025))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ModelConfig(10, 12, 1, 3, 1, 16, 4), "dim 10 is not a multiple of n_heads 3"),
        (ModelConfig(8, 12, 1, 2, 4, 16, 4), "n_heads 2 is not a multiple of n_kv_heads 4"),
        (ModelConfig(12, 12, 1, 4, 4, 16, 4), "head size 3 .* is odd"),
    ],
)
def test_inconsistent_shapes(config: ModelConfig, message: str) -> None:
    for header in (struct.pack("<7i", *_params(config)), _versioned_header(config, 1)):
        with pytest.raises(CheckpointError, match=message):
            parse_checkpoint(header + bytes(4096))


@pytest.mark.parametrize("version", [0, 3, -1, 1 << 30])
def test_unsupported_version(version: int) -> None:
    data = bytearray(_valid_file(1))
    struct.pack_into("<i", data, 4, version)
    with pytest.raises(CheckpointError, match=f"unsupported version {version}"):
        parse_checkpoint(bytes(data))


def test_wrong_magic_is_read_as_garbage_v0() -> None:
    data = bytearray(_valid_file(1))
    data[0] ^= 0x01
    with pytest.raises(CheckpointError, match=r"dim = \d+ is not in 1\.\."):
        parse_checkpoint(bytes(data))


def test_bad_shared_classifier_byte() -> None:
    data = bytearray(_valid_file(1))
    data[36] = 2
    with pytest.raises(CheckpointError, match="shared_classifier byte is 2"):
        parse_checkpoint(bytes(data))


@pytest.mark.parametrize("group_size", [3, 64, 0, -16, (1 << 31) - 1])
def test_v2_group_size_must_divide(group_size: int) -> None:
    data = bytearray(_valid_file(2, group_size=16))
    struct.pack_into("<i", data, 37, group_size)
    with pytest.raises(CheckpointError, match=f"group size {group_size}"):
        parse_checkpoint(bytes(data), "q.bin")


# --- non-finite weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_nonfinite_weights_are_rejected(tmp_path: Path, version: int) -> None:
    ckpt = random_checkpoint(TINY_UNSHARED, seed=5)
    ckpt.weights["wq"][1, 0, 0] = np.nan
    ckpt.weights["w2"][0, 1, :3] = [np.inf, -np.inf, np.nan]
    ckpt.weights["wcls"][2, 2] = np.inf
    path = tmp_path / "nan.bin"
    write_checkpoint(path, ckpt, version=version)
    with pytest.raises(CheckpointError, match=r"non-finite .* wq \(1\), w2 \(3\), wcls \(1\)"):
        read_checkpoint(path)
    loaded = read_checkpoint(path, allow_nonfinite=True)
    assert nonfinite_report(loaded) == {"wq": 1, "w2": 3, "wcls": 1}


def test_nonfinite_v2_scale_is_rejected() -> None:
    data = bytearray(_valid_file(2, group_size=16))
    norms = 4 * (2 * TINY.n_layers * TINY.dim + TINY.dim)
    tok_numel = TINY.vocab_size * TINY.dim
    struct.pack_into("<f", data, 256 + norms + tok_numel, np.inf)  # first scale of tok_embeddings
    with pytest.raises(CheckpointError, match="tok_embeddings"):
        parse_checkpoint(bytes(data))


def test_nonfinite_report_clean(stories260k: Path) -> None:
    assert nonfinite_report(read_checkpoint(stories260k)) == {}


# --- random checkpoints ----------------------------------------------------------------------------------


def test_random_checkpoint_is_deterministic() -> None:
    first, again, other = (random_checkpoint(TINY, seed) for seed in (1, 1, 2))
    assert first.config == TINY and first.format == "v0"
    assert {name: w.shape for name, w in first.weights.items()} == TINY.tensor_shapes()
    for name in first.weights:
        assert first.weights[name].dtype == np.float32
        np.testing.assert_array_equal(first.weights[name], again.weights[name])
        assert not np.array_equal(first.weights[name], other.weights[name])
    assert abs(float(first.weights["rms_att"].mean()) - 1.0) < 0.05
    assert float(first.weights["wq"].std()) == pytest.approx(0.02, rel=0.3)


def test_random_stories15m_shape(tmp_path: Path) -> None:
    config = PRESETS["15m"]
    assert config == ModelConfig(288, 768, 6, 6, 6, 32000, 256, True)
    assert expected_file_size(config) == 60816028  # the size of the real stories15M.bin
    path = tmp_path / "stories15M.bin"
    write_checkpoint(path, random_checkpoint(config, seed=0))
    assert path.stat().st_size == 60816028
    got = read_checkpoint(path)
    assert got.config == config and got.config.parameter_count() == 15191712


# --- command line ----------------------------------------------------------------------------------------


def test_cli_info(stories260k: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(stories260k)]) == 0
    out = capsys.readouterr().out
    assert "format: v0" in out and "dim: 64" in out and f"parameters: {S260K_PARAMS}" in out


def test_cli_random_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.bin"
    assert main(["random", "--preset", "260k", "--seed", "3", str(out)]) == 0
    got = read_checkpoint(out)
    assert got.config == PRESETS["260k"] and got.format == "v0"
    np.testing.assert_array_equal(got.weights["wq"], random_checkpoint(PRESETS["260k"], seed=3).weights["wq"])
    assert main(["random", "--preset", "260k", "--version", "2", "--group-size", "4", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "group_size: 4" in capsys.readouterr().out


def test_cli_error_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(b"nonsense" * 10)
    assert main(["info", str(path)]) == 1
    assert "error:" in capsys.readouterr().err


def test_cli_runs_as_module(stories260k: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmcu.checkpoint", "info", str(stories260k)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "site_scons")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "n_kv_heads: 4" in result.stdout


# --- properties ------------------------------------------------------------------------------------------

VALID_FILES = {version: _valid_file(version, TINY_UNSHARED) for version in (0, 1, 2)}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(version=st.sampled_from([0, 1, 2]), data=st.data())
def test_any_truncation_is_a_checkpoint_error(version: int, data: st.DataObject) -> None:
    full = VALID_FILES[version]
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(CheckpointError, match="truncated"):
        parse_checkpoint(full[:cut])


@FAST
@given(version=st.sampled_from([0, 1, 2]), offset=st.integers(0, 255), value=st.integers(0, 255))
def test_any_corrupt_header_byte_fails_cleanly(version: int, offset: int, value: int) -> None:
    data = bytearray(VALID_FILES[version])
    data[offset % (28 if version == 0 else 256)] = value
    with contextlib.suppress(CheckpointError):
        parse_checkpoint(bytes(data), allow_nonfinite=True)


def _parse_with_peak_memory(data: bytes) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(CheckpointError):
            parse_checkpoint(data, allow_nonfinite=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MEMORY_LIMIT = 4 << 20


@FAST
@given(header=st.binary(min_size=28, max_size=300), body=st.integers(0, 2048))
def test_random_headers_never_crash_or_allocate(header: bytes, body: int) -> None:
    assert _parse_with_peak_memory(header + bytes(body)) < MEMORY_LIMIT


small_field = st.one_of(st.integers(-2, 40), st.integers(-(1 << 31), (1 << 31) - 1))


@FAST
@given(
    versioned=st.sampled_from([None, 1, 2, 3]),
    params=st.lists(small_field, min_size=7, max_size=7),
    shared=st.integers(0, 2),
    group_size=small_field,
    body=st.integers(0, 4096),
)
def test_plausible_headers_never_crash_or_allocate(
    versioned: int | None, params: list[int], shared: int, group_size: int, body: int
) -> None:
    if versioned is None:
        header = struct.pack("<7i", *params)
    else:
        header = struct.pack("<Ii7iBi", MAGIC, versioned, *params, shared, group_size).ljust(256, b"\0")
    assert _parse_with_peak_memory(header + np.random.default_rng(body).bytes(body)) < MEMORY_LIMIT


@st.composite
def small_configs(draw: st.DrawFn) -> ModelConfig:
    kv_heads = draw(st.integers(1, 3))
    heads = kv_heads * draw(st.integers(1, 3))
    head_size = 2 * draw(st.integers(1, 4))
    return ModelConfig(
        dim=heads * head_size,
        hidden_dim=draw(st.integers(1, 40)),
        n_layers=draw(st.integers(1, 3)),
        n_heads=heads,
        n_kv_heads=kv_heads,
        vocab_size=draw(st.integers(1, 40)),
        seq_len=draw(st.integers(1, 16)),
        shared_classifier=draw(st.booleans()),
    )


@settings(max_examples=40, deadline=None)
@given(config=small_configs(), version=st.sampled_from([0, 1, 2]), seed=st.integers(0, 2**32 - 1))
def test_round_trip_property(config: ModelConfig, version: int, seed: int) -> None:
    ckpt = random_checkpoint(config, seed=seed, scale=0.5)
    group_size = 2 if version == 2 else 64  # 2 divides every matrix: dim is even
    got = parse_checkpoint(checkpoint_bytes(ckpt, version, group_size))
    assert got.config == config
    for name, want in ckpt.weights.items():
        if version < 2 or name in NORM_NAMES:
            np.testing.assert_array_equal(got.weights[name], want)
        else:
            _assert_within_q8_error(got.weights[name], want, group_size)
