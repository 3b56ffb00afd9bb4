"""STM32H743 firmware: every board and quantization links, the region reports are right, misfits are clear."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcu.core.config import ModelConfig
from llmcu.model.checkpoint import random_checkpoint, write_checkpoint
from support.build import llmcu_errors, scons

BOARDS = ("nucleo-h743zi", "h743-sdram-qspi")
ON_CHIP_RAM = {"dtcm", "axi_sram", "sram123", "sram4", "itcm"}


def report_of(out_dir: Path) -> dict:
    return json.loads((out_dir / "memory_report.json").read_text())


def used(report: dict) -> dict[str, int]:
    return {region["name"]: region["used"] for region in report["regions"] if region["used"]}


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firmware")


@pytest.mark.parametrize(
    ("quant", "board"),
    [("fp32", "nucleo-h743zi"), ("q8", "nucleo-h743zi"), ("q4", "h743-sdram-qspi"),
     *(pytest.param(q, b, marks=pytest.mark.slow)
       for q, b in (("fp32", "h743-sdram-qspi"), ("q8", "h743-sdram-qspi"), ("q4", "nucleo-h743zi")))],
)  # fmt: skip
def test_260k_links_with_a_region_report(board: str, quant: str, build_root: Path, stories260k: Path) -> None:
    args = [
        "target=stm32h743",
        f"board={board}",
        "model=260k",
        f"quant={quant}",
        "kv_type=f16",
        f"build_dir={build_root}",
    ]
    scons(args, stories260k.parent)
    out = next(path for path in (build_root / "stm32h743").iterdir() if path.name.startswith(f"260k-{quant}-kvf16")
               and (board == BOARDS[0]) != path.name.endswith(board))  # fmt: skip
    report = report_of(out)
    regions = used(report)
    # nothing external is needed for 260K; itcm holds the hot code (memplan.HOT_CODE_PATTERNS)
    assert set(regions) <= {"flash", "itcm", "dtcm", "axi_sram"}, regions
    assert regions["axi_sram"] >= 327_680  # the f16 KV cache of the full 512-token context
    assert report["weight_bytes"] > {"fp32": 1_000_000, "q8": 290_000, "q4": 160_000}[quant]
    assert 4_000 < report["code_bytes"] < 64_000
    assert report["macs_per_token"]["total_at_pos_128"] == 341_888
    assert (out / "firmware.elf").is_file() and (out / "firmware.bin").is_file()
    assert (out / "firmware.hex").read_text().startswith(":020000040800")  # extended address 0x0800xxxx
    assert "| flash |" in (out / "memory_report.md").read_text()


@pytest.fixture(scope="module")
def model_15m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m15") / "r15m.bin"
    write_checkpoint(path, random_checkpoint(ModelConfig(288, 768, 6, 6, 6, 32000, 256, True), seed=1))
    return path


@pytest.mark.parametrize("quant", [pytest.param("q8", marks=pytest.mark.slow), "q4"])
def test_15m_shaped_model_links_on_the_external_memory_board(
    quant: str, model_15m: Path, build_root: Path, tokenizer_32k: Path
) -> None:
    # fit=absmax: what is tested is the placement, and a 15M-shaped GPTQ fit would take 10 s of the suite
    args = ["target=stm32h743", "board=h743-sdram-qspi", f"model={model_15m}", f"tokenizer={tokenizer_32k}",
            f"quant={quant}", "fit=absmax", f"build_dir={build_root}"]  # fmt: skip
    scons(args, tokenizer_32k.parent)
    out = build_root / "stm32h743" / f"r15m-{quant}-absmax-h743-sdram-qspi"
    regions = used(report_of(out))
    assert regions["sdram"] == 2 * 6 * 256 * 288 * 2  # the q16 KV cache (0.9 MB) only fits in SDRAM
    if quant == "q8":
        assert regions["qspi"] > 8_000_000  # 17 MB of q8 weights spill from flash into QSPI
    assert regions["flash"] <= 2 * 1024 * 1024
    assert (out / "firmware.bin").is_file()
    assert (out / "firmware-qspi.bin").is_file() == ("qspi" in regions)


def test_full_context_fp32_kv_on_the_nucleo_is_a_clear_error(build_root: Path, stories260k: Path) -> None:
    args = ["target=stm32h743", "model=260k", "quant=q8", "kv_type=f32", f"build_dir={build_root}"]
    result = scons(args, stories260k.parent, check=False)
    assert result.returncode != 0
    message = result.stderr
    assert "KV cache (655,360 bytes" in message and "axi_sram has 524,288 free" in message
    # only changes planned again that fit (llmcu.builder.advice): never the value the build has, never quant=
    advice = message.split("Changes planned again that fit: ", 1)[1].split("\n", 1)[0]
    changes = advice.split(" (and ")[0].split("; ")  # the first six are shown, "(and N more)" after them
    assert {"kv_type=f16", "kv_type=q8", "kv_type=q16", "board=daisy-seed"} <= set(changes)
    assert changes[-1].startswith("board=") and "board=h743-sdram-qspi" not in changes  # other boards last, no template
    assert "kv_type=f32" not in changes and not [c for c in changes if c.startswith("quant=")]
    longest = next(c for c in changes if c.startswith("seq_len="))
    assert "Traceback" not in message
    # each one builds: the shortest context offered, and the smallest cache type; one position more than the
    # longest does not (the longest, not just a fitting one); and a sliding window over a cache that fits, so the
    # story goes on past it (planned with its records). Two builds at a time: scons builds one file at a time.
    slide = next(c for c in changes if c.startswith("overflow=slide seq_len="))
    assert int(slide.rsplit("=", 1)[1]) <= int(longest.split("=")[1])
    too_long = [a for a in args if a != "kv_type=f32"] + ["kv_type=f32", f"seq_len={int(longest.split('=')[1]) + 1}"]
    trials = {change: [a for a in args if not a.startswith(change.split("=")[0] + "=")] + [change]
              for change in (longest, "kv_type=q8")}  # fmt: skip
    trials["too long"] = too_long
    trials[slide] = [*args, *slide.split()]
    with ThreadPoolExecutor(2) as pool:
        codes = dict(zip(trials, pool.map(lambda a: scons(a, stories260k.parent, check=False).returncode,
                                          trials.values()), strict=True))  # fmt: skip
    assert codes == {longest: 0, "kv_type=q8": 0, "too long": codes["too long"] or 1, slide: 0}
    assert codes["too long"] != 0


@pytest.mark.slow  # 20 s; the nucleo's refusals and their advice stay in the default run (full-context fp32 KV)
def test_15m_on_the_nucleo_is_a_clear_error(model_15m: Path, build_root: Path, tokenizer_32k: Path) -> None:
    args = ["target=stm32h743", f"model={model_15m}", f"tokenizer={tokenizer_32k}", "quant=q4", "fit=absmax",
            "kv_type=q8", "seq_len=16", f"build_dir={build_root}"]  # fmt: skip
    result = scons(args, tokenizer_32k.parent, check=False)
    assert result.returncode != 0
    assert "do not fit" in result.stderr and "flash has" in result.stderr
    # the case: quant=q4 and weights=auto are never offered back; the board with QSPI is, planned and fitting
    advice = result.stderr.split("Changes planned again that fit: ", 1)[1].split("\n", 1)[0]
    # the boards with 128 MB of QSPI hold it, and the WeAct's 2 MB of flash + 8 MB of QSPI; the Daisy Seed's 128 KB +
    # 8 MB do not, and the template is never offered
    assert advice.split("; ") == ["board=stm32h743i-eval", "board=stm32h750b-dk", "board=weact-mini-h743"]


def test_unknown_board_lists_the_known_ones(build_root: Path, stories260k: Path) -> None:
    result = scons(["target=stm32h743", "board=nucleo-h7", f"build_dir={build_root}"], stories260k.parent, check=False)
    assert result.returncode != 0
    assert "nucleo-h743zi" in result.stderr and "h743-sdram-qspi" in result.stderr


def test_run_on_a_board_without_hil_says_what_to_do(build_root: Path, stories260k: Path) -> None:
    result = scons(["target=stm32h743", "model=260k", "quant=q8", "kv_type=f16", f"build_dir={build_root}", "run"],
                   stories260k.parent, check=False)  # fmt: skip
    assert result.returncode != 0 and "hil=qemu" in result.stderr


def test_automatic_kv_type_and_the_twin_with_the_boards_budget(build_root: Path, stories260k: Path) -> None:
    """The issue's two commands: the default KV type makes the full context fit the NUCLEO (q16, the integer
    attention, in AXI SRAM), and hil=qemu runs the build's twin, linked with the same plan, in QEMU."""
    args = ["target=stm32h743", "model=260k", "quant=q8", f"build_dir={build_root}"]
    result = scons([*args, "hil=qemu", "run", "prompt=Once upon a time", "temperature=0", "steps=24"],
                   stories260k.parent)  # fmt: skip
    out = build_root / "stm32h743" / "260k-q8"
    for image in (out, out / "twin"):
        script = (image / "gen" / "firmware.ld").read_text()
        assert "KV cache (q16) 327,680 B -> axi_sram" in script
    assert "#define LLMCU_KV_TYPE 3" in (out / "gen" / "model_config.h").read_text()
    assert "Once upon a time, there was a little girl" in result.stdout
    assert "24 tokens" in result.stdout and "instructions/token" in result.stdout


@pytest.mark.fault(
    area="build",
    kind="input",
    what="a build that fits the board's 16 MB QSPI but not its QEMU twin's 8 MB beside the SDRAM (hil=qemu)",
    sees=r"^llmcu: error: this build fits the stm32h743 board \(h743-sdram-qspi\) but not its QEMU twin qemu-m7; "
    r"its external memory is 16 MB in all \(sdram 8 MB, qspi 8 MB\): .* Run it on the board \(hil=none\)",
)
def test_what_fits_the_board_but_not_its_twin_names_the_twin(tmp_path: Path, tokenizer_32k: Path, sees) -> None:
    checkpoint = tmp_path / "wide.bin"  # 11 MB of q8 weights, all in QSPI
    write_checkpoint(checkpoint, random_checkpoint(ModelConfig(256, 512, 2, 4, 4, 32000, 32, True), seed=3))
    args = ["target=stm32h743", "board=h743-sdram-qspi", f"model={checkpoint}", f"tokenizer={tokenizer_32k}",
            "quant=q8", "fit=absmax", "weights=qspi", "hil=qemu", f"build_dir={tmp_path / 'build'}"]  # fmt: skip
    result = scons(args, tokenizer_32k.parent, check=False)
    errors = llmcu_errors(result)
    assert result.returncode != 0 and len(errors) == 1, result.stderr
    assert "board=" not in errors[0]  # no other board advised: this one fits
    sees(errors[0])
