"""Firmware reliability on the QEMU twin (targets/qemu-m7): the stack's high-water mark, the MPU guard below
the stack, the watchdog, and what the host makes of the fault reports.

The faults are real: test builds of the twin's firmware (tests/device/test_qemu_m7.py's compile_test_firmware, the
same generated sources, linker script and startup/fault code) recurse deeper than the stack
(-DLLMCU_TEST_RECURSION_BYTES) or hang after a few forward passes without kicking the watchdog
(-DLLMCU_TEST_HANG_AFTER), and a `scons ... stack=256 run` overflows the stack of an ordinary build. QEMU
emulates the Cortex-M7's MPU (PMSAv7), so the guard is what stops the overflow: memory below 0x20000000 does
not fault by itself there.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from llmcu.builder.memplan import STACK_GUARD_BYTES
from llmcu.builder.settings import FirmwareImage, RunParams
from llmcu.core.errors import OptionError
from llmcu.device.protocol import describe_fault, format_summary
from llmcu.device.qemu import FirmwareFaultError, QemuSession, run_firmware
from llmcu.device.runlog import RunInfo, RunLog, read_log
from llmcu.device.runs import run_twin
from llmcu.platform import watchdog
from llmcu.platform.targets import load_target
from support.build import llmcu_errors, scons

from .test_qemu_m7 import ROOT, Build, build_twin, compile_test_firmware, elf_symbols, needs_qemu

PARAMS = RunParams("Once upon a time", 24, 0.0, 0.9, 1)
HANG_AFTER = 6  # forward passes before the hung build stops
WATCHDOG_S = 0.005  # 5 ms: 5 million instructions on the twin, about 8 forward passes of stories260K q8
FAULT_TIMEOUT = 30.0  # seconds: a fault must end the run long before this
HANG_FUNCTIONS = ("platform_alive", "test_hang")


@pytest.fixture(scope="module")
def twin(shared_build_root: Path, stories260k: Path) -> Build:
    return build_twin("q8", shared_build_root, stories260k.parent)


@pytest.fixture(scope="module")
def variant(twin: Build):
    """variant(name, defines) -> the twin's firmware rebuilt with test-only defines, in its own folder (whose
    firmware.elf a FirmwareImage can run)."""
    built: dict[str, Path] = {}

    def build(name: str, defines: tuple[str, ...]) -> Path:
        if name not in built:
            folder = twin.elf.parent / "variants" / name
            folder.mkdir(parents=True, exist_ok=True)
            built[name] = compile_test_firmware(twin, folder / "firmware.elf", defines)
        return built[name]

    return build


def image_of(elf: Path) -> FirmwareImage:
    target = load_target("qemu-m7", ROOT / "targets")
    return FirmwareImage("firmware", target, target.memory, elf.parent, "")


def log_info() -> RunInfo:
    return RunInfo("qemu-m7", "260k", "q8", "qemu")


def watchdog_defines(seconds: float) -> tuple[str, ...]:
    """What the build passes for watchdog=<seconds> on the twin (llmcu.platform.watchdog)."""
    return tuple(
        f"-D{name}={value}" for name, value in watchdog.defines(load_target("qemu-m7", ROOT / "targets"), seconds)
    )


# ---- the stack: high-water mark, guard ----


@needs_qemu
def test_stack_peak_is_reported_and_grows_with_a_deeper_build(twin: Build, variant, tmp_path: Path) -> None:
    symbols = elf_symbols(twin.elf)
    limit, top = symbols["__stack_limit"][0], symbols["__stack_top"][0]
    assert limit - symbols["__stack_guard"][0] == STACK_GUARD_BYTES and top - limit == 8 * 1024

    with RunLog(tmp_path, log_info()) as log:
        plain = run_twin(image_of(twin.elf), PARAMS, log)
    peak = int(plain.summary["peak_stack"])
    assert 256 < peak < top - limit  # a real call chain, inside the stack
    assert read_log(log.path)["summary"]["peak_stack"] == peak and f"peak stack {peak:,} B" in format_summary(plain)

    deep = run_firmware(variant("deep", ("-DLLMCU_TEST_RECURSION_BYTES=4096",)), PARAMS)
    deeper = int(deep.summary["peak_stack"])
    assert deep.ok and deep.token_sequence() == plain.token_sequence()
    # The recursion runs (and returns) before the run, from main's frame: the peak is its 4 KB and more, above
    # the run's own use, and still inside the stack.
    assert max(peak, 4096) < deeper < top - limit


@needs_qemu
@pytest.mark.fault(
    area="firmware",
    kind="fault",
    what="a build that recurses 64 KB deep on its 8 KB stack (-DLLMCU_TEST_RECURSION_BYTES=65536)",
    sees=r"stack overflow: the 8,192-byte stack \(0x[0-9a-f]{8}-0x[0-9a-f]{8}\) ran into the MPU guard",
)
def test_deep_recursion_ends_in_the_stack_overflow_report(variant, tmp_path: Path, sees) -> None:
    elf = variant("overflow", ("-DLLMCU_TEST_RECURSION_BYTES=65536",))
    symbols = elf_symbols(elf)
    guard, limit = symbols["__stack_guard"][0], symbols["__stack_limit"][0]
    started = time.monotonic()
    with QemuSession(elf) as session:
        session.wait_ready()
        out = session.exchange(b"run steps=8\n", timeout=FAULT_TIMEOUT)
        code = session.wait_exit()
    assert time.monotonic() - started < FAULT_TIMEOUT
    assert out.status == "fault" and out.reason == "stack_overflow" and out.end["exception"] == "MemManage"
    assert code == 128 + 4  # board_fatal(MemManage): QEMU's exit status is not 0
    cfsr = int(out.end["cfsr"], 16)
    assert cfsr & 1 << 1 and cfsr & 1 << 7 and guard <= int(out.end["mmfar"], 16) < limit  # DACCVIOL in the guard
    assert int(out.end["sp"], 16) < limit and int(out.end["stack_limit"], 16) == limit

    # The same run the way `scons run` does it: an error (a failed scons action) and a log marked incomplete.
    with RunLog(tmp_path, log_info()) as log, pytest.raises(FirmwareFaultError) as caught:
        run_twin(image_of(elf), RunParams("Once", 8, 0.0, 0.9, 1), log)
    sees(str(caught.value))
    summary = read_log(log.path)["summary"]
    assert summary["status"] == "incomplete" and summary["reason"].startswith("fault: stack overflow")
    assert summary["fault"]["reason"] == "stack_overflow" and b"reason=stack_overflow" in log.raw_path.read_bytes()


@needs_qemu
@pytest.mark.fault(
    area="firmware",
    kind="fault",
    what="`scons target=qemu-m7 stack=256 run`: a stack smaller than one forward pass needs",
    sees=r"stack overflow: the 256-byte stack .* build with a larger stack, e\.g\. stack=512\b",
)
def test_too_small_a_stack_fails_the_run(stories260k: Path, tmp_path: Path, sees) -> None:
    """End to end: the option, the planner's guard, the report, `scons run`'s exit status and the log."""
    args = ["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={tmp_path / 'build'}", "stack=256"]
    args += [f"log_dir={tmp_path / 'logs'}", "run", "prompt=Once upon a time", "steps=8"]
    result = scons(args, stories260k.parent, check=False, timeout=300)
    assert result.returncode != 0
    sees(result.stderr)
    (folder,) = (tmp_path / "logs").iterdir()
    summary = read_log(folder)["summary"]
    assert summary["status"] == "incomplete" and "stack overflow" in summary["reason"]
    assert f"log: {folder}" in result.stdout and "(fault: stack overflow" in result.stdout


@needs_qemu
def test_every_stack_frame_is_smaller_than_the_guard(twin: Build) -> None:
    """A frame larger than the guard could step over it, below the stack, without touching it: the guard's
    size (memplan.STACK_GUARD_BYTES) must stay above the largest fixed frame in the firmware."""
    listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(twin.elf)], capture_output=True, text=True, check=True)
    frames = [int(n, 0) for n in re.findall(r"\bsubw?(?:\.w)?\s+sp, (?:sp, )?#(\d+)", listing.stdout)]
    assert frames and max(frames) < STACK_GUARD_BYTES
    assert not re.search(r"\bsub(?:\.w)?\s+sp, sp, r\d", listing.stdout)  # no variable-size frames either


# ---- the watchdog ----


@needs_qemu
@pytest.mark.fault(
    area="firmware",
    kind="fault",
    what="a build with watchdog=5ms that hangs after 6 forward passes without kicking it (-DLLMCU_TEST_HANG_AFTER)",
    sees=r"watchdog: the firmware made no progress .* at pc=0x[0-9a-f]{8}",
)
def test_hung_build_is_ended_by_the_watchdog(variant, tmp_path: Path, sees) -> None:
    elf = variant("hang", (f"-DLLMCU_TEST_HANG_AFTER={HANG_AFTER}", *watchdog_defines(WATCHDOG_S)))
    started = time.monotonic()
    with RunLog(tmp_path, log_info()) as log, pytest.raises(FirmwareFaultError) as caught:
        run_twin(image_of(elf), PARAMS, log, timeout=FAULT_TIMEOUT)
    assert time.monotonic() - started < FAULT_TIMEOUT
    sees(str(caught.value))
    report = caught.value.report
    assert report["reason"] == "watchdog" and report["exception"] == "NMI"
    symbols = elf_symbols(elf)  # where it hung: test_hang's loop, which the compiler may inline into platform_alive
    pc = int(report["pc"], 16)
    assert any(start <= pc < start + size for name, (start, size) in symbols.items() if name in HANG_FUNCTIONS)
    summary = read_log(log.path)["summary"]
    assert summary["status"] == "incomplete" and summary["reason"].startswith("fault: watchdog")
    assert summary["text"].startswith("Once upon a time")  # what came before the hang is kept


@needs_qemu
def test_hung_build_exits_non_zero(variant) -> None:
    elf = variant("hang", (f"-DLLMCU_TEST_HANG_AFTER={HANG_AFTER}", *watchdog_defines(WATCHDOG_S)))
    with QemuSession(elf) as session:
        session.wait_ready()
        out = session.exchange(b"run steps=24\n", timeout=FAULT_TIMEOUT)
        assert out.reason == "watchdog" and session.wait_exit() == 128 + 2  # board_fatal(NMI)


@needs_qemu
def test_watchdog_option_keeps_a_long_run_alive(stories260k: Path, tmp_path: Path) -> None:
    """watchdog=5ms on a run of 64 forward passes (about 40 ms on the twin): it completes because each pass
    kicks the watchdog; the built firmware loads the counter with 5 ms at 25 MHz."""
    build = tmp_path / "build"
    args = ["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={build}", "watchdog=5ms"]
    scons([*args, f"log_dir={tmp_path / 'logs'}", "run", "prompt=Once upon a time", "steps=64"], stories260k.parent)
    (folder,) = (tmp_path / "logs").iterdir()
    summary = read_log(folder)["summary"]
    assert summary["status"] == "complete" and summary["tokens"] == 64
    assert summary["cost_total"] > 2 * WATCHDOG_S * 1e9  # instructions: the run outlasts the watchdog's time
    elf = build / "qemu-m7" / "260k-q8" / "firmware.elf"
    listing = subprocess.run(
        ["arm-none-eabi-objdump", "-d", "--disassemble=board_watchdog_start", str(elf)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"\.word\s+0x0001e848", listing)  # 125,000 = 5 ms x 25 MHz, in the literal pool


# ---- watchdog=: from a time to register values (no QEMU) ----


def test_watchdog_times_and_register_values() -> None:
    h7 = load_target("stm32h743", ROOT / "targets")
    twin_target = load_target("qemu-m7", ROOT / "targets")
    assert watchdog.parse_timeout("off") == 0 and watchdog.parse_timeout("2s") == 2.0
    assert watchdog.parse_timeout("500ms") == 0.5 and watchdog.parse_timeout("1.5") == 1.5
    assert watchdog.plan(h7, 0) is None and watchdog.defines(h7, 0) == [("LLMCU_WATCHDOG", 0)]
    # IWDG: LSI 32 kHz / (4 << PR), RLR + 1 ticks; the smallest prescaler that fits gives the finest step.
    for seconds, pr, rlr in [(0.001, 0, 7), (0.5, 0, 3999), (2.0, 2, 3999), (10.0, 5, 2499), (32.768, 6, 4095)]:
        setting = watchdog.plan(h7, seconds)
        assert (setting.prescaler, setting.reload) == (pr, rlr), seconds
        assert setting.timeout_s == pytest.approx((rlr + 1) * (4 << pr) / 32000)
    setting = watchdog.plan(twin_target, 2.0)
    assert (setting.kind, setting.reload) == ("cmsdk", 50_000_000)
    assert ("LLMCU_WATCHDOG_MS", 2000) in setting.defines()


@pytest.mark.parametrize(
    ("target", "seconds", "message"),
    [
        pytest.param(
            "stm32h743", 40.0, r"watchdog=40s is outside what stm32h743's IWDG can count: 0\.125 ms to 32\.768 s",
            marks=pytest.mark.fault(
                area="options", kind="input", what="watchdog=40s on the STM32H743 (the IWDG counts at most 32.768 s)",
                sees=r"outside what stm32h743's IWDG can count: 0\.125 ms to 32\.768 s",
            ),
            id="iwdg-too-long",
        ),
        pytest.param(
            "stm32h743", 0.00005, r"watchdog=0\.05ms is outside",
            marks=pytest.mark.fault(
                area="options", kind="input", what="watchdog=0.05ms on the STM32H743 (below one LSI tick / 4)",
                sees=r"watchdog=0\.05ms is outside what stm32h743's IWDG can count",
            ),
            id="iwdg-too-short",
        ),
        pytest.param(
            "qemu-m7", 200.0, r"outside what qemu-m7's CMSDK watchdog can count",
            marks=pytest.mark.fault(
                area="options", kind="input", what="watchdog=200s on the QEMU twin (32-bit counter at 25 MHz)",
                sees=r"CMSDK watchdog can count: 40 ns to 171\.8 s",
            ),
            id="cmsdk-too-long",
        ),
        pytest.param(
            "host", 1.0, r"target host has no watchdog",
            marks=pytest.mark.fault(
                area="options", kind="input", what="watchdog=1s on target=host",
                sees=r"watchdog=1s: target host has no watchdog \(firmware targets only\)",
            ),
            id="host",
        ),
    ],
)  # fmt: skip
def test_watchdog_times_a_target_cannot_count(target: str, seconds: float, message: str, sees) -> None:
    with pytest.raises(OptionError, match=message) as caught:
        watchdog.plan(load_target(target, ROOT / "targets"), seconds)
    sees(str(caught.value))


@pytest.mark.fault(
    area="options", kind="input", what="watchdog=2x (not a time)", sees=r"watchdog='2x' is not valid .*off\|TIME"
)
def test_watchdog_text_that_is_not_a_time(sees) -> None:
    from llmcu.builder.options import validate
    from llmcu.builder.settings import options_table

    with pytest.raises(OptionError) as caught:
        validate({"watchdog": "2x"}, options_table())
    sees(str(caught.value))


# ---- the host's reading of the reports (no QEMU) ----


def test_fault_reports_read_as_what_happened() -> None:
    overflow = {"status": "fault", "reason": "stack_overflow", "exception": "MemManage", "pc": "0x00000000",
                "lr": "0x00000000", "cfsr": "0x00000092", "mmfar": "0x200007f8", "sp": "0x20000790",
                "stack_limit": "0x20000800", "stack_top": "0x20002800"}  # fmt: skip
    text = describe_fault(overflow)
    assert text.startswith("stack overflow: the 8,192-byte stack (0x20000800-0x20002800) ran into the MPU guard")
    assert "112 bytes below its limit" in text and "stack=16K" in text and "pc and lr lost" in text
    assert "DACCVIOL MSTKERR MMARVALID" in text
    hang = {"status": "fault", "reason": "watchdog", "exception": "NMI", "pc": "0x00002754", "lr": "0x00000e8d"}
    text = describe_fault(hang)
    assert text.startswith("watchdog: the firmware made no progress") and "pc=0x00002754" in text
    hard = {"status": "fault", "reason": "HardFault", "pc": "0x08000123", "cfsr": "0x00000400", "hfsr": "0x40000000"}
    assert describe_fault(hard).startswith("HardFault at pc=0x08000123") and "IMPRECISERR" in describe_fault(hard)


@pytest.mark.fault(
    area="options",
    kind="input",
    what="watchdog=1ms on the STM32H743's twin: shorter than a forward pass at the board's 480 MHz",
    sees=r"^llmcu: error: watchdog=1ms is shorter than 2 forward passes on the stm32h743 at 480 MHz: a pass is "
    r"about [\d.]+ ms .* choose watchdog=\d+ms or more$",
)
def test_a_watchdog_shorter_than_a_pass_at_the_chips_clock_is_refused(stories260k: Path, tmp_path: Path, sees) -> None:
    """QEMU counts an instruction a nanosecond, so a 1 ms watchdog lets the twin through a pass the board (at
    480 MHz, several ms) would be reset in: refused at build time, for the twin as for the board."""
    for target in ("qemu-m7", "stm32h743"):
        args = [f"target={target}", "model=260k", "watchdog=1ms", f"build_dir={tmp_path}"]
        result = scons(args, stories260k.parent, check=False)
        (line,) = llmcu_errors(result)
        assert result.returncode != 0 and "is shorter than 2 forward passes on the stm32h743" in line
        if target == "qemu-m7":
            sees(line)
    with pytest.raises(OptionError, match=r"choose watchdog=1\.2s or more"):
        watchdog.check_pass_time(1.0, 300_000_000, False, 2_000_000_000, "a chip")
    watchdog.check_pass_time(1.0, 1_000_000, True, 480_000_000, "a chip")  # 4 ms a pass: fine
