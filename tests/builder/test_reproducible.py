"""Same inputs, same bytes, on any machine: the build's arithmetic does not depend on the CPU or BLAS.

The quantizer's statistics (calibration, GPTQ, the q16 KV-cache scales, the quality figures that steer
``quant=auto``) are computed by llmcu.model.portable. Other machines are stood in for by OpenBLAS's kernels for
other CPUs (``OPENBLAS_CORETYPE``), its thread count, numpy's SIMD dispatch with AVX-512 switched off, and the C
library's own CPU dispatch (glibc's FMA and AVX2 variants of cosf/sinf/powf/expf, which the RoPE table and the
reference's expf call) switched off: every generated file must come out the same.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llmcu.model import portable
from support.build import scons

# Each a machine as numpy and OpenBLAS see it.
MACHINES = {
    "default": {},
    "prescott-1-thread": {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1"},
    "haswell-no-avx512-no-fma-libm": {
        "OPENBLAS_CORETYPE": "Haswell",
        "OPENBLAS_NUM_THREADS": "2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F",
    },
}


def _generated(out_dir: Path) -> dict[str, bytes]:
    """Every generated file but the manifest (llmcu.builder.outputs), which records the files' times as well."""
    files = [*sorted((out_dir / "gen").iterdir()), out_dir / "quant_report.json", out_dir / "quant_report.md"]
    return {path.name: path.read_bytes() for path in files if path.is_file() and path.name != "generated.json"}


@pytest.mark.parametrize("quant", ["q4", pytest.param("auto", marks=pytest.mark.slow)])
def test_generated_files_are_the_same_bytes_on_every_machine(
    quant: str, tmp_path: Path, stories260k: Path, tok512: Path
) -> None:
    """Without the quantized-weights cache (each machine fits for itself), a q4 build (calibration, GPTQ, the q16
    KV scales, the build's quality figures) and an auto build (the mix chosen by measured KL)."""

    def build(machine: str) -> dict[str, bytes]:
        env = {"LLMCU_QUANT_CACHE": "0", **MACHINES[machine]}
        args = ["target=qemu-m7", f"model={stories260k}", f"tokenizer={tok512}", f"quant={quant}"]
        scons([*args, f"build_dir={tmp_path / machine}"], stories260k.parent, env=env)
        (out_dir,) = (tmp_path / machine / "qemu-m7").iterdir()
        return _generated(out_dir)

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(MACHINES, pool.map(build, MACHINES), strict=True))
    reference = results["default"]
    assert {"model_weights.c", "model_data.bin", "quant_report.json"} <= reference.keys()
    for machine, files in results.items():
        assert files.keys() == reference.keys(), machine
        different = [name for name in files if files[name] != reference[name]]
        assert not different, f"{machine}: {different} differ from the default machine's"


# ---- the portable arithmetic itself ----


def test_fixed_matmul_is_exact_in_any_order_and_close_to_the_true_product() -> None:
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(16, 700)) * np.exp(rng.normal(size=700) * 3)).astype(np.float32)
    b = rng.normal(size=(700, 300)).astype(np.float32)
    product = portable.fixed_matmul(a, b)
    order = rng.permutation(700)  # the same sums in another order: the same bits
    assert np.array_equal(portable.fixed_matmul(a[:, order], b[order]), product)
    row_by_row = np.stack([portable.fixed_matmul(a[i : i + 1], b)[0] for i in range(16)])
    assert np.array_equal(row_by_row, product)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = np.abs(a).max(axis=1, keepdims=True) * np.abs(b).max(axis=0) * 700 * 2.0 ** -portable.product_bits(700)
    assert np.all(np.abs(product - exact) <= bound)
    with pytest.raises(ValueError, match="fixed_matmul"):
        portable.fixed_matmul(a, b[:5])


def test_gram_is_exact_in_any_order() -> None:
    rows = np.random.default_rng(4).normal(size=(300, 40))
    assert np.array_equal(portable.gram(rows), portable.gram(rows[::-1]))
    assert np.allclose(portable.gram(rows), rows.T @ rows, rtol=1e-5, atol=1e-4)
    assert portable.gram(np.zeros((0, 3))).shape == (3, 3)


def test_elementary_functions_are_accurate() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-740, 705, 5000), rng.normal(size=5000)])
    expected = np.array([math.exp(v) for v in x])
    assert np.all(np.abs(portable.exp(x) - expected) <= 4e-16 * expected)
    y = np.exp(rng.uniform(-700, 700, 5000))
    assert np.allclose(portable.log(y), [math.log(v) for v in y], rtol=1e-15, atol=1e-15)
    angles = rng.uniform(0, 4096, 5000)
    cos, sin = portable.cos_sin(angles)
    assert np.max(np.abs(cos - [math.cos(v) for v in angles])) < 1e-14
    assert np.max(np.abs(sin - [math.sin(v) for v in angles])) < 1e-14
    special = portable.exp(np.array([-np.inf, np.inf, np.nan, 0.0, -1000.0]))
    assert special[0] == 0 and special[1] == np.inf and np.isnan(special[2]) and special[3] == 1 and special[4] == 0
    logs = portable.log(np.array([0.0, -1.0, np.inf, np.nan, 1.0]))
    assert logs[0] == -np.inf and np.isnan(logs[1]) and logs[2] == np.inf and np.isnan(logs[3]) and logs[4] == 0
    assert np.allclose(portable.softmax(np.array([[1.0, 2.0, 3.0]])).sum(), 1.0)


def test_inverse_upper_factor_matches_lapack_and_refuses_an_indefinite_matrix() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(400, 120))
    h = x.T @ x / 400 + 0.01 * np.eye(120)
    upper = portable.inverse_upper_factor(h)
    assert np.allclose(upper, np.triu(upper))
    assert np.allclose(upper, np.linalg.cholesky(np.linalg.inv(h)).T, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="not positive definite"):
        portable.inverse_upper_factor(-h)
