"""A Linux target's program against its board's RAM (llmcu.builder.linuxmem, llmcu.builder.advice.linux_changes).

The RZ/V2L's program must fit beside the OS: a board_ram= too small for it is one error naming every part and
what is left, before any C is generated, with only changes that were planned again and fit (each one is built
here); kv_type=auto takes the first automatic type that fits.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from llmcu.builder import layouts, linuxmem, steps
from llmcu.builder.memplan import FitError
from llmcu.builder.settings import BuildSettings, configure
from llmcu.core.errors import OptionError
from llmcu.device.runlog import built_kv_type
from support.build import llmcu_errors, scons

needs_cross = pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None, reason="aarch64-linux-gnu-gcc missing")


def _configure(tmp_path: Path, models: Path, monkeypatch, **options: str) -> BuildSettings:
    monkeypatch.setenv("LLMCU_MODELS", str(models))
    return configure({"target": "rzv2l", "model": "260k", "build_dir": str(tmp_path), **options})


@needs_cross
def test_too_little_ram_names_every_part_and_only_changes_that_fit(tmp_path, stories260k, monkeypatch) -> None:
    result = scons(["target=rzv2l", "model=260k", "quant=fp32", "board_ram=8M", f"build_dir={tmp_path}"],
                   stories260k.parent, check=False)  # fmt: skip
    assert result.returncode != 0
    (line,) = llmcu_errors(result)
    assert "does not fit the rzv2l board's RAM: it needs 7.7 MiB (weights 1,040,128 bytes" in line
    for part in ("tokenizer", "KV cache 655,360 bytes", "run state", "program and 2 thread stacks"):
        assert part in line
    assert "6.0 MiB of the board's 8.0 MiB is left beside the 2.0 MiB the OS keeps" in line
    assert not (tmp_path / "rzv2l" / "260k-fp32" / "gen" / "model_config.h").exists()  # nothing generated
    suggested = line.split("Changes planned again that fit: ", 1)[1].split("; ")
    assert suggested == ["quant=q8 threads=1", "quant=q4 threads=1", "quant=q4z threads=1"]
    assert not any("quant=fp32" in change for change in suggested)  # never the build's own value
    for change in suggested:  # each one plans (and, the first, builds) with board_ram=8M
        options = {"quant": "fp32", **dict(word.split("=", 1) for word in change.split())}
        settings = _configure(tmp_path, stories260k.parent, monkeypatch, board_ram="8M", **options)
        steps.generate_sources(settings)
    first = ["target=rzv2l", "model=260k", "board_ram=8M", f"build_dir={tmp_path}", *suggested[0].split()]
    scons(first, stories260k.parent)


def test_kv_type_auto_takes_the_first_type_that_fits(tmp_path, stories260k, monkeypatch) -> None:
    roomy = _configure(tmp_path, stories260k.parent, monkeypatch, quant="fp32")
    model = steps.generate_sources(roomy)
    assert model.kv_type == "f32"  # 2G: run.c's numbers
    f32 = linuxmem.needs(model, "f32", roomy.default_threads).total
    f16 = linuxmem.needs(model, "f16", roomy.default_threads).total
    ram = ((f32 + f16) // 2 * 4 // 3) // 1024 * 1024  # three quarters of it are left beside the OS: between the two
    tight = _configure(tmp_path / "tight", stories260k.parent, monkeypatch, quant="fp32", board_ram=str(ram))
    assert steps.generate_sources(tight).kv_type == "f16"
    assert built_kv_type(tight.gen_dir, "auto") == "f16"
    with pytest.raises(FitError, match=r"kv_type=f16"):  # f32 named: the advice is the type that fits
        steps.generate_sources(
            _configure(tmp_path / "f32", stories260k.parent, monkeypatch, quant="fp32", kv_type="f32",
                       board_ram=str(ram))
        )  # fmt: skip


def test_board_ram_is_for_linux_targets(stories260k, monkeypatch) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    for target, words in (("host", "is this machine"), ("stm32h743", "plans its memory regions from its board")):
        with pytest.raises(OptionError, match=re.escape(words)):
            configure({"target": target, "model": "260k", "board_ram": "1G"})
    with pytest.raises(OptionError, match="board_ram"):
        configure({"target": "rzv2l", "model": "260k", "board_ram": "lots"})


@pytest.mark.parametrize("quant", ["q4", "q8", "fp32"])
def test_the_estimate_from_the_shape_is_what_the_build_counts(quant, tmp_path, stories260k, monkeypatch) -> None:
    """linuxmem.estimate (README's preset table, before any download) against the needs of the generated model:
    the weights to the byte, the KV cache and run state alike, the tokenizer within a few per cent."""
    settings = _configure(tmp_path, stories260k.parent, monkeypatch, quant=quant)
    model = steps.generate_sources(settings)
    built = linuxmem.needs(model, model.kv_type, settings.default_threads)
    plan = model.plan
    layout = layouts.for_kernel_set(settings.kernel_set)  # the NEON set pads q4's pair panels to eight rows
    estimated = linuxmem.estimate(model.config, plan, model.kv_type, settings.default_threads, built.tokenizer, layout)
    assert (estimated.weights, estimated.kv_cache) == (built.weights, built.kv_cache)
    assert abs(estimated.run_state - built.run_state) <= 64 * model.records + 64


def test_readme_preset_table_is_the_tools_output() -> None:
    """The "Presets" table of docs/models-and-quantization.md is what tools/preset_fit.py computes now (regenerate it
    when a preset changes)."""
    import subprocess
    import sys

    from conftest import ROOT

    table = subprocess.run([sys.executable, str(ROOT / "tools" / "preset_fit.py")], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    assert table.strip() in (ROOT / "docs" / "models-and-quantization.md").read_text()
    assert "| `tinyllama-q4_0` | 637.7 MB | q4 | 687.8 MB | 46.1 MB (q16) |" in table


def test_a_short_context_on_a_small_board_is_offered_with_a_sliding_window(tmp_path, stories260k, monkeypatch) -> None:
    """When only a shorter context fits the board, the advice also offers overflow=slide with the longest window
    that fits (planned with the window's records), and that build goes through."""
    roomy = _configure(tmp_path, stories260k.parent, monkeypatch, quant="fp32", kv_type="f32")
    model = steps.generate_sources(roomy)
    need = linuxmem.needs(model, "f32", roomy.default_threads).total
    ram = (need - 300_000) * 4 // 3 // 1024 * 1024  # a quarter for the OS: 300 kB short of the whole context
    tight = _configure(tmp_path / "tight", stories260k.parent, monkeypatch, quant="fp32", kv_type="f32",
                       board_ram=str(ram))  # fmt: skip
    from llmcu.builder import advice as advice_module

    monkeypatch.setattr(advice_module, "MOST_SHOWN", 20)  # all of them (the error shows the first six)
    with pytest.raises(FitError) as info:
        steps.generate_sources(tight)
    advice = str(info.value).split("Changes planned again that fit: ", 1)[1]
    changes = advice.split("; ")
    shorter = next(change for change in changes if change.startswith("seq_len="))
    slide = next(change for change in changes if change.startswith("overflow=slide seq_len="))
    assert 6 <= int(slide.rsplit("=", 1)[1]) <= int(shorter.split("=")[1]) < 512
    options = dict(word.split("=", 1) for word in slide.split())
    fixed = _configure(tmp_path / "slid", stories260k.parent, monkeypatch, quant="fp32", kv_type="f32",
                       board_ram=str(ram), **options)  # fmt: skip
    assert steps.generate_sources(fixed).seq_len == int(options["seq_len"])
