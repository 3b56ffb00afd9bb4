"""Fitting weights to their codes (llmcu.model.fitting), calibration (llmcu.model.calibration) and quant=auto
(llmcu.builder.autoquant)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from llmcu.builder import autoquant
from llmcu.builder.memplan import FitError
from llmcu.core.config import ModelConfig
from llmcu.core.errors import QuantizationError
from llmcu.model import calibration, fitting
from llmcu.model.checkpoint import random_checkpoint, read_checkpoint
from llmcu.model.quantize import QuantizedMatrix, QuantPlan, quantize_checkpoint, quantize_matrix, unpack_q4
from llmcu.model.tokenizer import read_tokenizer

SMALL = ModelConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, seq_len=32)


def _output_error(w: np.ndarray, q: np.ndarray, scales: np.ndarray, group: int, h: np.ndarray) -> float:
    diff = q * np.repeat(scales, group, axis=1)[:, : w.shape[1]] - w
    return float(np.einsum("ij,jk,ik->", diff, h, diff))


def _correlated_inputs(cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4000, cols)) * np.exp(rng.standard_normal(cols))  # channels of unequal size
    x[:, 1::2] += 0.8 * x[:, 0::2]  # and correlated
    return x.T @ x / len(x)


@pytest.mark.parametrize("qtype", ["q4", "q8"])
def test_each_fit_beats_the_one_before_on_the_output_error(qtype: str) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((48, 96)) * 0.05
    h = _correlated_inputs(96)
    errors = {}
    for method in ("absmax", "search", "gptq"):
        q, scales = fitting.fit(w, qtype, 32, method, h)
        qmin, qmax = fitting.code_range(qtype)
        assert q.dtype == np.int8 and qmin <= q.min() and q.max() <= qmax
        assert scales.dtype == np.float32 and scales.shape == (48, 3)
        errors[method] = _output_error(w, q.astype(np.float64), scales.astype(np.float64), 32, h)
    assert errors["gptq"] < errors["search"] < errors["absmax"], errors


def test_q4_fits_use_all_sixteen_codes_and_repeat() -> None:
    w = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    q_abs, _ = fitting.fit(w, "q4", 32, "absmax")
    assert q_abs.min() == -7  # llama2.c's symmetric fit leaves -8 unused
    q, scales = fitting.fit(w, "q4", 32, "search")
    assert q.min() == -8 and q.max() == 7
    again = fitting.fit(w, "q4", 32, "search")
    assert np.array_equal(again[0], q) and np.array_equal(again[1], scales)


def test_a_zero_group_and_a_dead_input_channel_stay_finite() -> None:
    w = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    w[0, :8] = 0
    h = _correlated_inputs(16)
    h[3, :] = h[:, 3] = 0  # channel 3 never carries a signal
    q, scales = fitting.fit(w, "q4", 8, "gptq", h)
    assert scales[0, 0] == 0 and not q[0, :8].any()
    assert np.all(np.isfinite(scales))
    with pytest.raises(QuantizationError, match="unknown fit"):
        fitting.fit(w, "q4", 8, "best")


def test_calibration_is_deterministic_and_reads_every_input() -> None:
    ckpt = random_checkpoint(SMALL, seed=4)
    first, second = calibration.collect(ckpt), calibration.collect(ckpt)
    assert first.tokens == second.tokens > 0
    for kind, layer in (("wq", 0), ("wo", 1), ("w1", 1), ("w2", 0), ("tok_embeddings", None)):
        h = first.hessian(kind, layer)
        assert np.array_equal(h, second.hessian(kind, layer))
        assert np.allclose(h, h.T) and np.all(np.diag(h) > 0)
    assert first.hessian("w2", 0).shape == (SMALL.hidden_dim, SMALL.hidden_dim)
    assert sum(len(s) for s in first.sequences) == first.tokens


@pytest.mark.fault(
    area="quantization",
    kind="input",
    what="calib= names an empty file, a binary file, or text that is not UTF-8",
    sees=r"calibration text .*: (is empty|is not text|is not UTF-8)",
)
@pytest.mark.parametrize("content", [b"", b"  \n\n", b"\x00\x01\x02binary", b"caf\xe9 au lait"])
def test_a_bad_calibration_text_is_refused(content: bytes, tmp_path: Path, sees) -> None:
    path = tmp_path / "calib.txt"
    path.write_bytes(content)
    with pytest.raises(QuantizationError) as info:
        calibration.text_sequences(path, 32, tokenizer=None)
    sees(str(info.value))


def test_a_calibration_text_file_steers_the_fit(stories260k: Path, tok512: Path, tmp_path: Path) -> None:
    ckpt, tok = read_checkpoint(stories260k), read_tokenizer(tok512, 512)
    text = tmp_path / "stories.txt"
    text.write_text("Tom had a red ball. He threw it to his dog, and the dog ran after it in the sun.\n" * 20)
    stats = calibration.calibrate(ckpt, str(text), tok)
    assert stats is not None and stats.source == "text file stories.txt" and stats.tokens > 100
    from_text = quantize_checkpoint(ckpt, QuantPlan("q4", 32, (), "gptq", str(text)), tok)
    sampled = quantize_checkpoint(ckpt, QuantPlan("q4", 32, (), "gptq", "sampled"), tok)
    assert not np.array_equal(from_text["w1"].q, sampled["w1"].q)


def test_stories260k_q4_codes_include_minus_eight(stories260k: Path) -> None:
    """The default fit uses the code -8 that llama2.c's leaves out, so every end-to-end q4 test (host, M7 twin,
    A55) holds the kernels to the oracle on it."""
    quantized = quantize_checkpoint(read_checkpoint(stories260k), QuantPlan("q4z"))
    assert all(int(m.q.min()) == -8 for kind, m in quantized.items() if m.qtype == "q4"), "a kind without -8"


def _sizes(ckpt: object) -> Callable[[dict[str, QuantizedMatrix]], int]:
    """A mix's weight bytes (the matrices only: what every mix of ``ckpt`` differs by)."""
    return lambda mix: sum(m.nbytes() for m in mix.values())


def test_auto_takes_the_upgrades_that_pay_most_within_the_budget() -> None:
    ckpt = random_checkpoint(SMALL, seed=5, scale=0.1)
    stats = calibration.collect(ckpt)
    smallest = autoquant.choose(ckpt, QuantPlan("q4z"), stats, _sizes(ckpt), lambda plan, mix: None, budget=0)
    assert all(m.qtype == "fp32" for m in smallest.quantized.values())  # no limit: nothing is lost
    all_q4 = sum(m.nbytes() for m in quantize_checkpoint(ckpt, QuantPlan("q4z")).values())
    budget = all_q4 + 3000
    choice = autoquant.choose(ckpt, QuantPlan("q4z"), stats, _sizes(ckpt), lambda plan, mix: None, budget=budget)
    size = sum(m.nbytes() for m in choice.quantized.values())
    assert all_q4 < size <= budget
    upgraded = {kind for kind, m in choice.quantized.items() if m.qtype != "q4z"}
    assert upgraded and choice.plan.default == "q4z" and set(dict(choice.plan.overrides)) == upgraded
    assert choice.steps[0].startswith("start: every matrix q4z") and choice.steps[-1].startswith("stop:")
    # The mix is exactly what a build of that plan quantizes, so the oracle can follow it.
    again = quantize_checkpoint(ckpt, choice.plan)
    for kind, matrix in choice.quantized.items():
        assert np.array_equal(again[kind].q, matrix.q)


@pytest.mark.fault(
    area="quantization",
    kind="input",
    what="budget= below the smallest model (every matrix q4z)",
    sees=r"budget=1,000 is below the smallest model: with every matrix in q4z .* the weights take [\d,]+ bytes",
)
def test_a_budget_below_the_smallest_model_is_refused(sees) -> None:
    ckpt = random_checkpoint(SMALL, seed=6)
    with pytest.raises(FitError) as info:
        autoquant.choose(ckpt, QuantPlan("q4z"), None, _sizes(ckpt), lambda plan, mix: None, budget=1000)
    sees(str(info.value))


@pytest.mark.fault(
    area="quantization",
    kind="input",
    what="quant=auto where even every matrix in q4z does not fit the target",
    sees=r"quant=auto: even the smallest mix \(every matrix q4z, [\d,]+ bytes\) does not fit: flash has 10 bytes",
)
def test_auto_where_nothing_fits_names_the_smallest_mix_and_the_region(sees) -> None:
    ckpt = random_checkpoint(SMALL, seed=7)
    with pytest.raises(FitError) as info:
        autoquant.choose(ckpt, QuantPlan("q4z"), None, _sizes(ckpt), lambda plan, mix: "flash has 10 bytes free", 0)
    sees(str(info.value))


def test_auto_respects_what_the_target_refuses() -> None:
    ckpt = random_checkpoint(SMALL, seed=8, scale=0.1)
    refused = autoquant.choose(
        ckpt,
        QuantPlan("q4z"),
        None,
        _sizes(ckpt),
        lambda plan, mix: "w2 may not grow" if mix["w2"].qtype != "q4z" else None,
    )
    assert refused.quantized["w2"].qtype == "q4z"
    assert any("w2 q8 does not fit (w2 may not grow)" in step for step in refused.steps)
    assert isinstance(refused.quantized["w1"], QuantizedMatrix) and refused.quantized["w1"].qtype == "fp32"


@pytest.mark.fault(
    area="options",
    kind="input",
    what="budget= without quant=auto, or quant=auto with quant_overrides=",
    sees=r"(budget= steers quant=auto; with quant=q4 drop it|quant=auto chooses every tensor's type itself)",
)
@pytest.mark.parametrize("extra", [{"quant": "q4", "budget": "180K"}, {"quant": "auto", "quant_overrides": "w2=q8"}])
def test_auto_options_that_contradict_each_other_are_refused(extra: dict[str, str], stories260k: Path, sees) -> None:
    from llmcu.builder.settings import configure
    from llmcu.core.errors import OptionError

    with pytest.raises(OptionError) as info:
        configure({"model": str(stories260k), "tokenizer": str(stories260k.parent / "tok512.bin"), **extra})
    sees(str(info.value))


@pytest.mark.fault(
    area="options",
    kind="input",
    what="calib= names a file that does not exist",
    sees=r"calib='/nowhere/text.txt' is not valid \(is neither sampled, none, nor a text file",
)
def test_a_missing_calibration_file_is_an_option_error(stories260k: Path, sees) -> None:
    from llmcu.builder.settings import configure
    from llmcu.core.errors import OptionError

    with pytest.raises(OptionError) as info:
        configure({"model": str(stories260k), "tokenizer": str(stories260k.parent / "tok512.bin"),
                   "quant": "q4", "calib": "/nowhere/text.txt"})  # fmt: skip
    sees(str(info.value))


# ---- q4z ----


def test_q4z_group_words_decode_to_what_the_fit_chose() -> None:
    scales = fitting.q4z_round_scale(np.array([6.2e-5, 1e-3, 0.0123, 0.5, 3.3, 6e4, 1e-12, 1e12]))
    zeros = np.array([0, 1, 3, 8, 15, 7, 2, 9], dtype=np.uint8)
    words = fitting.q4z_encode(scales, zeros)
    decoded, decoded_zeros = fitting.q4z_decode(words)
    assert np.array_equal(decoded, scales) and np.array_equal(decoded_zeros, zeros)
    assert scales[6] == np.float32(2.0**-14) and scales[7] == np.float32(65024)  # clamped to binary16's normals
    # The scale is the binary16 number the word is without its zero point, as hardware converts it.
    assert np.array_equal((words & 0xFFF0).view(np.float16).astype(np.float32), scales)
    # Six mantissa bits: every representable scale is within 1/128 of what was asked.
    asked = np.geomspace(1e-4, 1e4, 1000)
    assert np.all(np.abs(fitting.q4z_round_scale(asked) / asked - 1) <= 1 / 128 + 1e-7)


def test_q4z_storage_holds_the_codes_and_words_the_kernels_read() -> None:
    matrix = np.random.default_rng(9).standard_normal((5, 44)).astype(np.float32) + 0.7  # leaning to one side
    quantized = quantize_matrix(matrix, "q4z", 8)
    data, words = quantized.storage()
    assert len(data) == 5 * 22 and len(words) == 5 * 6 * 2
    n = unpack_q4(np.frombuffer(data, np.uint8).reshape(5, 22), 44).astype(np.int16) + 8
    scales, zeros = fitting.q4z_decode(np.frombuffer(words, "<u2").reshape(5, 6))
    assert n.min() >= 0 and n.max() == 15
    rebuilt = (n - np.repeat(zeros, 8, axis=1)[:, :44]) * np.repeat(scales, 8, axis=1)[:, :44]
    assert np.array_equal(rebuilt.astype(np.float32), quantized.dequantize())
    assert zeros.max() < 8  # the offset follows the lean: a symmetric q4 would waste codes on the other side
    q4 = quantize_matrix(matrix, "q4", 8)
    assert np.sum((quantized.dequantize() - matrix) ** 2) < np.sum((q4.dequantize() - matrix) ** 2)
    assert quantized.nbytes() < q4.nbytes()


def test_q4z_gptq_beats_its_search_on_the_output_error() -> None:
    rng = np.random.default_rng(10)
    w = rng.standard_normal((48, 96)) * 0.05
    h = _correlated_inputs(96, seed=2)
    errors = {}
    for method in ("absmax", "search", "gptq"):
        q, scales, _ = fitting.fit_q4z(w, 32, method, h)
        errors[method] = _output_error(w, q.astype(np.float64), scales.astype(np.float64), 32, h)
    assert errors["gptq"] < errors["search"] <= errors["absmax"], errors


# ---- the disk cache of fitted weights ----


def test_fitted_weights_are_cached_and_a_damaged_entry_is_refitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmcu.model import quantcache

    monkeypatch.delenv(quantcache.ENV_FOLDER, raising=False)  # the suite's own cache folder: the user's here
    monkeypatch.setenv("LLMCU_CACHE", str(tmp_path))
    ckpt = random_checkpoint(SMALL, seed=11)
    plan = QuantPlan("q4z", 8, (("wq", "q8"), ("w2", "fp32")))
    first = quantize_checkpoint(ckpt, plan)
    entries = list((tmp_path / quantcache.FOLDER).glob("*.npz"))
    assert len(entries) == 1
    second = quantize_checkpoint(ckpt, plan)  # read back: the same codes, scales and zero points, to the bit
    for kind, matrix in first.items():
        again = second[kind]
        assert (again.qtype, again.group_size) == (matrix.qtype, matrix.group_size)
        assert np.array_equal(again.q, matrix.q) and again.q.dtype == matrix.q.dtype
        for ours, theirs in ((matrix.scales, again.scales), (matrix.zeros, again.zeros)):
            assert (ours is None and theirs is None) or np.array_equal(ours, theirs)
    # another plan, another model: other entries
    quantize_checkpoint(ckpt, QuantPlan("q8", 8))
    quantize_checkpoint(random_checkpoint(SMALL, seed=12), plan)
    assert len(list((tmp_path / quantcache.FOLDER).glob("*.npz"))) == 3
    # a truncated entry is ignored, and rewritten whole
    entries[0].write_bytes(entries[0].read_bytes()[:100])
    third = quantize_checkpoint(ckpt, plan)
    assert np.array_equal(third["w1"].q, first["w1"].q) and quantcache.load(entries[0]) is not None
    # another numpy is another key; LLMCU_QUANT_CACHE_DIR moves the folder
    key = quantcache.cache_key("digest", ("q8",))
    monkeypatch.setattr(quantcache.np, "__version__", "0.0.1")
    assert quantcache.cache_key("digest", ("q8",)) != key
    monkeypatch.setenv(quantcache.ENV_FOLDER, str(tmp_path / "elsewhere"))
    assert quantcache.cache_path(key) == tmp_path / "elsewhere" / f"{key}.npz"
    monkeypatch.delenv(quantcache.ENV_FOLDER)
    # switched off: nothing read or written
    monkeypatch.setenv("LLMCU_QUANT_CACHE", "0")
    entries[0].unlink()
    quantize_checkpoint(ckpt, plan)
    assert not entries[0].exists()
