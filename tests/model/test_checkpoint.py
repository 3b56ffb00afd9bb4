"""Checkpoint reading, writing and validation for llama2.c's v0, v1 and v2 formats.

Layouts are checked against files built here by hand with ``struct`` (not with the writer under test), and
the real stories260K file pins the reader to values computed once with an independent ``np.fromfile``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcu.cli.checkpoint import main
from llmcu.core.config import LAYER_MATRICES, NORM_NAMES, ModelConfig
from llmcu.core.errors import CheckpointError
from llmcu.model.checkpoint import (
    MAGIC,
    MAX_DIM,
    MAX_LAYERS,
    MAX_SEQ_LEN,
    MAX_VOCAB,
    PRESETS,
    Checkpoint,
    checkpoint_bytes,
    detect_format,
    expected_file_size,
    nonfinite_report,
    parse_checkpoint,
    random_checkpoint,
    read_checkpoint,
    rope_tables,
    write_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]

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
    # Per matrix, per group of the flattened matrix: |error| <= scale / 2 = max|w| / 254, plus the float32 rounding
    # of scale and q * scale (a weight halfway between two codes is off by exactly half a step before it).
    matrices = want.reshape(-1, *want.shape[-2:]) if want.ndim == 3 else want[None]
    for got_m, want_m in zip(got.reshape(matrices.shape), matrices, strict=True):
        groups = want_m.reshape(-1, group_size).astype(np.float64)
        amax = np.abs(groups).max(axis=1, keepdims=True)
        bound = amax / 254 + amax * 2.0**-21 + 1e-12
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


# Every header field of every format, as (version, first byte, end): the file is cut at every byte offset
# inside it (offset 0, the empty file, is its own case below).
@pytest.mark.parametrize(
    ("version", "start", "end"),
    [
        pytest.param(
            0,
            0,
            4,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside dim (1-3 bytes)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            0,
            4,
            8,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside hidden_dim (bytes 4-7)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            0,
            8,
            12,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside n_layers (bytes 8-11)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            0,
            12,
            16,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside n_heads (bytes 12-15)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            0,
            16,
            20,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside n_kv_heads (bytes 16-19)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            0,
            20,
            24,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside vocab_size (bytes 20-23)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            0,
            24,
            28,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut inside seq_len (bytes 24-27)",
                sees=r"truncated header: a legacy \(v0\) header needs 28 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            0,
            4,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside the magic (1-3 bytes)",
                sees=r"truncated header: a v1/v2 header needs 256 bytes, the file has [1-3]$",
            ),
        ),
        pytest.param(
            1,
            4,
            8,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside the version (bytes 4-7)",
                sees=r"truncated header: a v1/v2 header needs 256 bytes, the file has [4-7]$",
            ),
        ),
        pytest.param(
            1,
            8,
            12,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside dim (bytes 8-11)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            12,
            16,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside hidden_dim (bytes 12-15)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            16,
            20,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside n_layers (bytes 16-19)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            20,
            24,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside n_heads (bytes 20-23)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            24,
            28,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside n_kv_heads (bytes 24-27)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            28,
            32,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside vocab_size (bytes 28-31)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            32,
            36,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside seq_len (bytes 32-35)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            36,
            37,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut before the shared_classifier byte (36 bytes)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            1,
            37,
            256,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut inside the header's zero padding (bytes 37-255)",
                sees=r"truncated header: a v1 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            2,
            8,
            36,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file cut inside the seven shape fields (bytes 8-35)",
                sees=r"truncated header: a v2 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            2,
            36,
            37,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file cut before the shared_classifier byte (36 bytes)",
                sees=r"truncated header: a v2 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            2,
            37,
            41,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file cut inside group_size (bytes 37-40)",
                sees=r"truncated header: a v2 header needs 256 bytes, the file has \d+$",
            ),
        ),
        pytest.param(
            2,
            41,
            256,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file cut inside the header's zero padding (bytes 41-255)",
                sees=r"truncated header: a v2 header needs 256 bytes, the file has \d+$",
            ),
        ),
    ],
)
def test_truncated_inside_every_header_field(tmp_path: Path, sees, version: int, start: int, end: int) -> None:
    full = _valid_file(version)
    path = tmp_path / "cut.bin"
    for cut in range(max(start, 1), end):
        path.write_bytes(full[:cut])
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and message.endswith(f"the file has {cut}"), message
        sees(message)


@pytest.mark.fault(area="checkpoint", kind="input", what="empty checkpoint file (0 bytes)", sees=r"file is empty")
def test_empty_file(tmp_path: Path, sees) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    sees(str(info.value))


def _boundaries(version: int, config: ModelConfig) -> list[tuple[int, str, str]]:
    """(offset, tensor before, tensor after) at the end of the header and of every tensor but the last,
    computed from the format description in the module docstring, not from the reader."""
    head = 28 if version == 0 else 256
    shapes = config.tensor_shapes()
    sizes: list[tuple[str, int]] = []
    if version == 0:
        sizes = [(n, 4 * int(np.prod(shapes[n]))) for n in shapes if n != "wcls"]
        table = 4 * config.seq_len * config.head_size // 2
        sizes += [("freq_cis_real", table), ("freq_cis_imag", table)]
    elif version == 1:
        sizes = [(n, 4 * int(np.prod(shapes[n]))) for n in [*NORM_NAMES, "tok_embeddings", *LAYER_MATRICES]]
    else:
        sizes = [(n, 4 * int(np.prod(shapes[n]))) for n in NORM_NAMES]
        q8 = [("tok_embeddings", int(np.prod(shapes["tok_embeddings"])))]
        q8 += [
            (f"{n} (layer {i})", int(np.prod(shapes[n][1:]))) for n in LAYER_MATRICES for i in range(config.n_layers)
        ]
        sizes += [(name, numel + 4 * (numel // 16)) for name, numel in q8]
    if not config.shared_classifier:
        sizes.append(("wcls", 0))  # the last tensor: only where it starts matters
    points, offset, before = [], head, "the header"
    for name, size in sizes:
        points.append((offset, before, name))
        offset += size
        before = name
    return points


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(
            0,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut at each tensor boundary (after the header, after every tensor and RoPE table)",
                sees=(
                    r"truncated: a v0 checkpoint .* is \d+ bytes, the file has \d+ \(\d+ missing; the file ends after"
                    r" .*, before \w+\)"
                ),
            ),
        ),
        pytest.param(
            1,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut at each tensor boundary",
                sees=r"truncated: a v1 checkpoint .* the file ends after .*, before \w+\)",
            ),
        ),
        pytest.param(
            2,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file cut at each tensor boundary (every layer of every Q8_0 matrix)",
                sees=r"truncated: a v2 checkpoint .*, group size 16 is \d+ bytes, .* the file ends after .*, before ",
            ),
        ),
    ],
)
def test_truncated_at_every_tensor_boundary(tmp_path: Path, sees, version: int) -> None:
    full = _valid_file(version, TINY_UNSHARED)
    path = tmp_path / "cut.bin"
    points = _boundaries(version, TINY_UNSHARED)
    assert points[-1][0] < len(full)
    for offset, before, after in points:
        path.write_bytes(full[:offset])
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
        message = str(info.value)
        assert f"the file has {offset} ({len(full) - offset} missing;" in message
        before_text = "after the header" if before == "the header" else f"after {before}"
        assert message.endswith(f"the file ends {before_text}, before {after})"), message
        sees(message)


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(
            0,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file cut in the middle of a tensor and one byte short",
                sees=r"truncated: .* \(\d+ missing; the file ends inside \w+",
            ),
        ),
        pytest.param(
            1,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file cut in the middle of a tensor and one byte short",
                sees=r"truncated: .* \(\d+ missing; the file ends inside \w+",
            ),
        ),
        pytest.param(
            2,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file cut in the middle of a tensor and one byte short",
                sees=r"truncated: .* \(\d+ missing; the file ends inside \w+",
            ),
        ),
    ],
)
@pytest.mark.parametrize("where", ["middle", "last byte"])
def test_truncated_in_weights(tmp_path: Path, sees, version: int, where: str) -> None:
    data = _valid_file(version, TINY_UNSHARED)
    cut = len(data) // 2 if where == "middle" else len(data) - 1
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=rf"truncated: .* is {len(data)} bytes, the file has {cut}") as info:
        read_checkpoint(path)
    if where == "last byte":  # wcls is the last tensor of every format
        assert re.search(r"the file ends inside wcls, (\d+) of its \d+ bytes\)$", str(info.value)), str(info.value)
    sees(str(info.value))


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(
            0,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file with 1, 4 or 1000 bytes after the last tensor",
                sees=r"\d+ trailing bytes: a v0 checkpoint .* the header does not match the data",
            ),
        ),
        pytest.param(
            1,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file with 1, 4 or 1000 bytes after the last tensor",
                sees=r"\d+ trailing bytes: a v1 checkpoint",
            ),
        ),
        pytest.param(
            2,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 file with 1, 4 or 1000 bytes after the last tensor",
                sees=r"\d+ trailing bytes: a v2 checkpoint .* group size 16",
            ),
        ),
    ],
)
@pytest.mark.parametrize("extra", [1, 4, 1000])
def test_trailing_bytes(tmp_path: Path, sees, version: int, extra: int) -> None:
    path = tmp_path / "long.bin"
    path.write_bytes(_valid_file(version) + bytes(extra))
    with pytest.raises(CheckpointError, match=f"{extra} trailing bytes") as info:
        read_checkpoint(path)
    assert str(path) in str(info.value)
    sees(str(info.value))


# --- garbage, bad headers --------------------------------------------------------------------------------


def _gzip_of_a_checkpoint() -> bytes:
    return gzip.compress(_valid_file(0), mtime=0)


NOT_CHECKPOINTS = {
    "text": b"This is not a model, it is a shopping list: eggs, milk, flour, sugar.\n" * 20,
    "zeros": bytes(4096),
    "png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(200),
    "html": b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n" * 3,
    "gguf": b"GGUF\x03\0\0\0" + bytes(300),
    "pytorch": b"PK\x03\x04\x14\0\0\0\x08\0" + b"archive/data.pkl" + bytes(300),
    "elf": b"\x7fELF\x02\x01\x01\0" + bytes(300),
}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            "text",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="a text file given as the checkpoint",
                sees=r"not a llama2\.c checkpoint: this is a text file \(dim = \d+ is not in 1\.\.1048576",
            ),
        ),
        pytest.param(
            "zeros",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="4 KB of zero bytes",
                sees=r"not a llama2\.c checkpoint: this is all zero bytes .*dim = 0 is not in 1\.\.",
            ),
        ),
        pytest.param(
            "png",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="a PNG image",
                sees=r"not a llama2\.c checkpoint: this is a PNG image",
            ),
        ),
        pytest.param(
            "html",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="an HTML error page (a download that went wrong)",
                sees=r"this is a text file \(HTML or JSON: a download that returned an error page\?\)",
            ),
        ),
        pytest.param(
            "gguf",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="a GGUF (llama.cpp) model file",
                sees=r"this is a GGUF file \(llama\.cpp\); llmcu reads llama2\.c checkpoints",
            ),
        ),
        pytest.param(
            "pytorch",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="a PyTorch .pt (zip) file",
                sees=(
                    r"this is a zip archive \(a PyTorch \.pt/\.pth file is one\); export it with llama2\.c's"
                    r" export\.py"
                ),
            ),
        ),
        pytest.param(
            "elf",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="an ELF executable (e.g. the built program)",
                sees=r"this is an ELF program, not model data",
            ),
        ),
    ],
)
def test_not_a_checkpoint_names_what_it_is(tmp_path: Path, sees, kind: str) -> None:
    path = tmp_path / f"{kind}.bin"
    path.write_bytes(NOT_CHECKPOINTS[kind])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ")
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint", kind="input", what="a gzip-compressed checkpoint", sees=r"this is a gzip file; unpack it first"
)
def test_gzipped_checkpoint(tmp_path: Path, sees) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(_gzip_of_a_checkpoint())
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="the tokenizer (tok512.bin) given as the checkpoint",
    sees=r"tok512\.bin: .*(not in 1\.\.|truncated|trailing bytes|not a multiple)",
)
def test_tokenizer_is_not_a_checkpoint(tok512: Path, sees) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tok512)
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="random bytes of 1 to 4096 bytes",
    sees=r"(not in 1\.\.\d+|truncated|not a multiple|unsupported version|not a llama2\.c checkpoint)",
)
@pytest.mark.parametrize("size", [1, 3, 27, 28, 100, 256, 4096])
def test_random_bytes(tmp_path: Path, sees, size: int) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(size).bytes(size))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="a checkpoint path that does not exist",
    sees=r"nope\.bin: cannot read checkpoint: No such file",
)
def test_missing_file(tmp_path: Path, sees) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "nope.bin")
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="a directory given as the checkpoint",
    sees=r"cannot read checkpoint: Is a directory",
)
def test_directory(tmp_path: Path, sees) -> None:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path)
    sees(str(info.value))


FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"]


def _v0_with(field: str, value: int) -> bytes:
    data = bytearray(_valid_file(0))
    struct.pack_into("<i", data, 4 * FIELDS.index(field), value)
    return bytes(data)


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(
            "dim",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 dim 0, negative, 2^23, INT_MIN or INT_MAX",
                sees=r"dim = -?\d+ is not in 1\.\.1048576: a corrupt header, or not a llama2\.c checkpoint",
            ),
        ),
        pytest.param(
            "hidden_dim",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 hidden_dim 0, negative, 2^23, INT_MIN or INT_MAX",
                sees=r"hidden_dim = -?\d+ is not in 1\.\.1048576",
            ),
        ),
        pytest.param(
            "n_layers",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 n_layers 0, negative, 2^23, INT_MIN or INT_MAX",
                sees=r"n_layers = -?\d+ is not in 1\.\.1024",
            ),
        ),
        pytest.param(
            "n_heads",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 n_heads 0, negative, 2^23, INT_MIN or INT_MAX",
                sees=r"n_heads = -?\d+ is not in 1\.\.1048576",
            ),
        ),
        pytest.param(
            "n_kv_heads",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 n_kv_heads 0, negative, 2^23, INT_MIN or INT_MAX",
                sees=r"n_kv_heads = -?\d+ is not in 1\.\.1048576",
            ),
        ),
        pytest.param(
            "vocab_size",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 vocab_size 0, -2^23, 2^23, INT_MIN or INT_MAX (negative means unshared)",
                sees=r"vocab_size = \d+ is not in 1\.\.4194304",
            ),
        ),
        pytest.param(
            "seq_len",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 seq_len 0, negative, 2^23, INT_MIN or INT_MAX",
                sees=r"seq_len = -?\d+ is not in 1\.\.1048576",
            ),
        ),
    ],
)
@pytest.mark.parametrize("value", [0, -3, 1 << 23, -(1 << 31), (1 << 31) - 1])
def test_absurd_dims_v0(sees, field: str, value: int) -> None:
    if field == "vocab_size" and value == -3:
        value = -(1 << 23)  # a small negative vocab is legal in v0 (unshared classifier)
    with pytest.raises(CheckpointError, match=f"{field} = ") as info:
        parse_checkpoint(_v0_with(field, value), "bad.bin")
    sees(str(info.value))


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(
            "dim",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 dim 0, -1 or 2^23",
                sees=r"dim = (0|-1|8388608) is not in 1\.\.1048576",
            ),
        ),
        pytest.param(
            "hidden_dim",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 hidden_dim 0, -1 or 2^23",
                sees=r"hidden_dim = (0|-1|8388608) is not in 1\.\.",
            ),
        ),
        pytest.param(
            "n_layers",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 n_layers 0, -1 or 2^23",
                sees=r"n_layers = (0|-1|8388608) is not in 1\.\.1024",
            ),
        ),
        pytest.param(
            "n_heads",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 n_heads 0, -1 or 2^23",
                sees=r"n_heads = (0|-1|8388608) is not in 1\.\.",
            ),
        ),
        pytest.param(
            "n_kv_heads",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 n_kv_heads 0, -1 or 2^23",
                sees=r"n_kv_heads = (0|-1|8388608) is not in 1\.\.",
            ),
        ),
        pytest.param(
            "vocab_size",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 vocab_size 0, -1 or 2^23",
                sees=r"vocab_size = (0|-1|8388608) is not in 1\.\.4194304",
            ),
        ),
        pytest.param(
            "seq_len",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 seq_len 0, -1 or 2^23",
                sees=r"seq_len = (0|-1|8388608) is not in 1\.\.",
            ),
        ),
    ],
)
@pytest.mark.parametrize("value", [0, -1, 1 << 23])
def test_absurd_dims_v1(sees, field: str, value: int) -> None:
    data = bytearray(_valid_file(1))
    struct.pack_into("<i", data, 8 + 4 * FIELDS.index(field), value)
    with pytest.raises(CheckpointError, match=f"{field} = {value} is not in 1\\.\\.") as info:
        parse_checkpoint(bytes(data), "bad.bin")
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="v0 header with n_layers 1024 (within the limit) on a small file, then 1025 (over it)",
    sees=r"truncated: a v0 checkpoint with .* n_layers 1024.* the file ends inside",
)
def test_limits_are_per_field(sees) -> None:
    # Each limit alone is below its bound, but the file cannot be that big: a size error, not a crash.
    with pytest.raises(CheckpointError, match="truncated") as info:
        parse_checkpoint(_v0_with("n_layers", 1024))
    sees(str(info.value))
    with pytest.raises(CheckpointError, match="n_layers = 1025"):
        parse_checkpoint(_v0_with("n_layers", 1025))


BIGGEST = ModelConfig(MAX_DIM, MAX_DIM, MAX_LAYERS, 2, 1, MAX_VOCAB, MAX_SEQ_LEN, False)


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(
            0,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what=(
                    "v0 header claiming the largest allowed model (dim 2^20, 1024 layers, vocab 2^22, seq_len 2^20:"
                    " petabytes) on a 1 KB file"
                ),
                sees=(
                    r"truncated: a v0 checkpoint with dim 1048576, .* is \d{16,} bytes, the file has 1052 \(\d+"
                    r" missing; the file ends inside tok_embeddings, 1024 of its 17592186044416 bytes"
                ),
            ),
        ),
        pytest.param(
            1,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 header claiming the largest allowed model on a 1 KB file",
                sees=r"truncated: a v1 checkpoint with dim 1048576, .* is \d{16,} bytes, the file has 1280",
            ),
        ),
        pytest.param(
            2,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 header claiming the largest allowed model (group size 2^20) on a 1 KB file",
                sees=r"truncated: a v2 checkpoint with dim 1048576, .*group size 1048576 is \d{16,} bytes",
            ),
        ),
    ],
)
def test_lying_header_allocates_nothing_big(tmp_path: Path, sees, version: int) -> None:
    header = (
        struct.pack("<7i", *_params(BIGGEST, -MAX_VOCAB))
        if version == 0
        else _versioned_header(BIGGEST, version, MAX_DIM if version == 2 else None)
    )
    path = tmp_path / "liar.bin"
    path.write_bytes(header + bytes(1024))
    error: CheckpointError | None = None
    tracemalloc.start()
    try:
        read_checkpoint(path)
    except CheckpointError as caught:
        error = caught
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # the reader validated the shape against the file size before allocating a single tensor: what it
    # allocated is the header, the layout description (v2: one entry per layer and matrix, ~1 MB for 1024
    # layers) and the message, not a byte per claimed weight
    assert peak < 4 << 20, f"reading a lying header allocated {peak} bytes"
    assert error is not None, "a 1 KB file was accepted as a model of petabytes"
    sees(str(error))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            ModelConfig(10, 12, 1, 3, 1, 16, 4),
            "dim 10 is not a multiple of n_heads 3",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="header with dim 10 and 3 heads (v0 and v1)",
                sees=r"dim 10 is not a multiple of n_heads 3",
            ),
        ),
        pytest.param(
            ModelConfig(8, 12, 1, 2, 4, 16, 4),
            "n_heads 2 is not a multiple of n_kv_heads 4",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="header with more kv heads than heads (v0 and v1)",
                sees=r"n_heads 2 is not a multiple of n_kv_heads 4",
            ),
        ),
        pytest.param(
            ModelConfig(12, 12, 1, 4, 4, 16, 4),
            "head size 3 .* is odd",
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="header with an odd head size (v0 and v1)",
                sees=r"head size 3 \(dim / n_heads\) is odd; RoPE rotates pairs of values",
            ),
        ),
    ],
)
def test_inconsistent_shapes(sees, config: ModelConfig, message: str) -> None:
    for header in (struct.pack("<7i", *_params(config)), _versioned_header(config, 1)):
        with pytest.raises(CheckpointError, match=message) as info:
            parse_checkpoint(header + bytes(4096))
        sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="llama2.c magic with version 0, 3, -1 or 2^30",
    sees=r"unsupported version -?\d+ \(llama2\.c magic found; llmcu reads versions 1 and 2\)",
)
@pytest.mark.parametrize("version", [0, 3, -1, 1 << 30])
def test_unsupported_version(sees, version: int) -> None:
    data = bytearray(_valid_file(1))
    struct.pack_into("<i", data, 4, version)
    with pytest.raises(CheckpointError, match=f"unsupported version {version}") as info:
        parse_checkpoint(bytes(data))
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="v1 file with one bit of the magic flipped",
    sees=r"dim = \d+ is not in 1\.\.1048576: a corrupt header, or not a llama2\.c checkpoint",
)
def test_wrong_magic_is_read_as_garbage_v0(sees) -> None:
    data = bytearray(_valid_file(1))
    data[0] ^= 0x01
    with pytest.raises(CheckpointError, match=r"dim = \d+ is not in 1\.\.") as info:
        parse_checkpoint(bytes(data))
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="v1 shared_classifier byte 2",
    sees=r"shared_classifier byte is 2, expected 0 or 1",
)
def test_bad_shared_classifier_byte(sees) -> None:
    data = bytearray(_valid_file(1))
    data[36] = 2
    with pytest.raises(CheckpointError) as info:
        parse_checkpoint(bytes(data))
    sees(str(info.value))


@pytest.mark.parametrize(
    "group_size",
    [
        pytest.param(
            3,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 group size 3, which divides no matrix",
                sees=(
                    r"group size 3 does not divide tok_embeddings \(128 values per matrix\); a v2 checkpoint needs"
                    r" every matrix to be a whole number of groups"
                ),
            ),
        ),
        pytest.param(
            64,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 group size 64, which divides tok_embeddings and wq but not wk (32 values)",
                sees=r"group size 64 does not divide wk \(32 values per matrix\)",
            ),
        ),
        pytest.param(
            0,
            marks=pytest.mark.fault(
                area="checkpoint", kind="input", what="v2 group size 0", sees=r"group size 0 is not positive"
            ),
        ),
        pytest.param(
            -16,
            marks=pytest.mark.fault(
                area="checkpoint", kind="input", what="v2 group size -16", sees=r"group size -16 is not positive"
            ),
        ),
        pytest.param(
            (1 << 31) - 1,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v2 group size INT_MAX",
                sees=r"group size 2147483647 does not divide tok_embeddings",
            ),
        ),
    ],
)
def test_v2_group_size_must_divide(sees, group_size: int) -> None:
    data = bytearray(_valid_file(2, group_size=16))
    struct.pack_into("<i", data, 37, group_size)
    with pytest.raises(CheckpointError, match=f"group size {group_size}") as info:
        parse_checkpoint(bytes(data), "q.bin")
    sees(str(info.value))


# --- non-finite weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        pytest.param(
            0,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v0 file with NaN and Inf in three tensors (wq, w2, wcls)",
                sees=(
                    r"non-finite weights \(NaN or Inf\) in wq \(1 value, the first wq\[1, 0, 0\] = nan\); w2 \(3"
                    r" values, the first w2\[0, 1, 0\] = inf\); wcls \(1 value, the first wcls\[2, 2\] = inf\)"
                ),
            ),
        ),
        pytest.param(
            1,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="v1 file with NaN and Inf in three tensors (wq, w2, wcls)",
                sees=(
                    r"non-finite weights \(NaN or Inf\) in wq \(1 value, .*; w2 \(3 values, .*; wcls .*pass"
                    r" allow_nonfinite=True to load it anyway"
                ),
            ),
        ),
    ],
)
def test_nonfinite_weights_are_rejected(tmp_path: Path, sees, version: int) -> None:
    ckpt = random_checkpoint(TINY_UNSHARED, seed=5)
    ckpt.weights["wq"][1, 0, 0] = np.nan
    ckpt.weights["w2"][0, 1, :3] = [np.inf, -np.inf, np.nan]
    ckpt.weights["wcls"][2, 2] = np.inf
    path = tmp_path / "nan.bin"
    write_checkpoint(path, ckpt, version=version)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    sees(str(info.value))
    loaded = read_checkpoint(path, allow_nonfinite=True)
    assert nonfinite_report(loaded) == {"wq": 1, "w2": 3, "wcls": 1}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            np.nan,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="one NaN in each tensor in turn, at a random index (v1)",
                sees=(
                    r"non-finite weights \(NaN or Inf\) in \w+ \(1 value, the first \w+\[[\d, ]+\] = nan\): the file"
                    r" is corrupt or the training run diverged"
                ),
            ),
        ),
        pytest.param(
            np.inf,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="one +Inf in each tensor in turn, at a random index (v1)",
                sees=r"in \w+ \(1 value, the first \w+\[[\d, ]+\] = inf\)",
            ),
        ),
        pytest.param(
            -np.inf,
            marks=pytest.mark.fault(
                area="checkpoint",
                kind="input",
                what="one -Inf in each tensor in turn, at a random index (v1)",
                sees=r"in \w+ \(1 value, the first \w+\[[\d, ]+\] = -inf\)",
            ),
        ),
    ],
)
def test_nonfinite_value_is_named_per_tensor_and_index(sees, value: float) -> None:
    rng = np.random.default_rng(11)
    for name, shape in TINY_UNSHARED.tensor_shapes().items():
        ckpt = random_checkpoint(TINY_UNSHARED, seed=6)
        index = tuple(int(rng.integers(0, n)) for n in shape)
        ckpt.weights[name][index] = value
        with pytest.raises(CheckpointError) as info:
            parse_checkpoint(checkpoint_bytes(ckpt, version=1), "m.bin")
        message = str(info.value)
        assert f" in {name} (1 value, the first {name}[{', '.join(map(str, index))}] = " in message, message
        sees(message)


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="v2 file whose first tok_embeddings scale is Inf",
    sees=(
        r"non-finite weights \(NaN or Inf\) in tok_embeddings \(\d+ values, the first tok_embeddings\[0, 0\] ="
        r" -?(inf|nan)\)"
    ),
)
def test_nonfinite_v2_scale_is_rejected(sees) -> None:
    data = bytearray(_valid_file(2, group_size=16))
    norms = 4 * (2 * TINY.n_layers * TINY.dim + TINY.dim)
    tok_numel = TINY.vocab_size * TINY.dim
    struct.pack_into("<f", data, 256 + norms + tok_numel, np.inf)  # first scale of tok_embeddings
    with pytest.raises(CheckpointError, match="tok_embeddings") as info:
        parse_checkpoint(bytes(data))
    sees(str(info.value))


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="v2 file with a NaN in a norm weight (rms_final, stored as fp32)",
    sees=r"non-finite weights \(NaN or Inf\) in rms_final \(1 value, the first rms_final\[3\] = nan\)",
)
def test_nonfinite_v2_norm_is_rejected(sees) -> None:
    data = bytearray(_valid_file(2, group_size=16))
    rms_final = 256 + 4 * (2 * TINY.n_layers * TINY.dim)
    struct.pack_into("<f", data, rms_final + 4 * 3, np.nan)
    with pytest.raises(CheckpointError) as info:
        parse_checkpoint(bytes(data))
    sees(str(info.value))


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
        [sys.executable, "-m", "llmcu.cli.checkpoint", "info", str(stories260k)],
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
