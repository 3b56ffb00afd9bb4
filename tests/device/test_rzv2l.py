"""The Renesas RZ/V2L target (kind "linux"): cross builds run under qemu-aarch64, the weights file, threads,
the instruction-counting plugin, the toolchain choices, and the SSH deploy against a real sshd on localhost."""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcu.builder import codegen, layouts, linux, weightsfile
from llmcu.builder.settings import BuildSettings, configure, option_values, run_options
from llmcu.core.errors import OptionError
from llmcu.device import qemu_user, sshdeploy
from llmcu.device.protocol import RunOutput, parse
from llmcu.model.checkpoint import read_checkpoint
from llmcu.model.quantize import QuantPlan
from llmcu.model.tokenizer import read_tokenizer
from llmcu.platform import destination
from llmcu.platform.targets import load_target
from support.build import ROOT, case_args, prompt_filling_context, scons

QEMU = "qemu-aarch64"
CROSS_CC = "aarch64-linux-gnu-gcc"
TARGET = load_target("rzv2l", ROOT / "targets")

pytestmark = pytest.mark.skipif(
    shutil.which(QEMU) is None or shutil.which(CROSS_CC) is None,
    reason=f"needs {CROSS_CC} and {QEMU} (tools/setup.sh installs them)",
)


def kernel_options() -> list[str]:
    """The target's optimised kernels when their folder exists (another engineer's work), else reference ones."""
    return [] if (ROOT / "runtime_c" / "kernels" / TARGET.kernel_set).is_dir() else ["kernels=ref"]


# ---- builds, shared by the module ----


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rzv2l")


@pytest.fixture(scope="module")
def builds(build_root: Path, stories260k: Path) -> dict[str, Path]:
    """The rzv2l programs (fp32, q8, q4, q4z, q8 with a weights file) and the host's reference q8/q4/q4z, two at
    a time."""
    wanted = {
        "fp32": ["target=rzv2l", "quant=fp32", *kernel_options()],
        "q8": ["target=rzv2l", "quant=q8", *kernel_options()],
        "q4": ["target=rzv2l", "quant=q4", *kernel_options()],
        "q4z": ["target=rzv2l", "quant=q4z", *kernel_options()],
        "q8-file": ["target=rzv2l", "quant=q8", "weights_file=yes", *kernel_options()],
        "host-q8": ["target=host", "quant=q8", "kernels=ref"],
        "host-q4": ["target=host", "quant=q4", "kernels=ref"],
        "host-q4z": ["target=host", "quant=q4z", "kernels=ref"],
    }

    def build(args: list[str]) -> None:
        scons(["model=260k", f"build_dir={build_root}", *args], stories260k.parent)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(build, wanted.values()))
    found = {}
    for name, args in wanted.items():
        target = args[0].split("=")[1]
        quant = args[1].split("=")[1]
        suffix = ("-wfile" if "weights_file=yes" in args else "") + ("-refkernels" if "kernels=ref" in args else "")
        if target == "host" and not load_target("host", ROOT / "targets").kernel_set:
            suffix = suffix.replace("-refkernels", "")
        program = build_root / target / f"260k-{quant}{suffix}" / "llmcu"
        assert program.is_file(), program
        found[name] = program
    return found


def run_qemu(program: Path, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([QEMU, "-cpu", "max", str(program), *args], capture_output=True, check=check, timeout=300)


# ---- correctness under qemu-aarch64 ----


def test_program_is_a_static_aarch64_executable(builds: dict[str, Path]) -> None:
    header = builds["fp32"].read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[18] == 183  # EM_AARCH64
    dynamic = subprocess.run(["aarch64-linux-gnu-readelf", "-l", str(builds["fp32"])], capture_output=True, text=True)
    assert "INTERP" not in dynamic.stdout


def test_fp32_reproduces_every_golden_case(builds: dict[str, Path], golden_cases: list[dict]) -> None:
    for case in golden_cases:
        stdout = run_qemu(builds["fp32"], [*case_args(case), "-q"]).stdout
        assert stdout.decode("utf-8", errors="replace") == case["stdout"], case["prompt"]


@pytest.mark.parametrize("quant", ["q8", "q4", "q4z"])
def test_quantized_equal_the_host_with_one_and_two_threads(
    quant: str, builds: dict[str, Path], golden_cases: list[dict]
) -> None:
    for case in golden_cases:
        host = parse(subprocess.run([str(builds[f"host-{quant}"]), *case_args(case)], capture_output=True).stdout)
        assert host.ok
        for threads in (1, 2):
            out = parse(run_qemu(builds[quant], [*case_args(case), "-j", str(threads)]).stdout)
            assert out.ok and out.header["target"] == "rzv2l"
            assert out.token_sequence() == host.token_sequence(), (quant, threads, case["prompt"])
            assert out.text == host.text


@pytest.mark.parametrize("quant", ["q8", "q4"])
def test_quantized_equal_the_host_to_the_end_of_the_context(quant: str, builds: dict[str, Path]) -> None:
    """All 512 positions of the KV cache written and attended over: NEON's q16 blocks equal the reference's."""
    args = ["-p", prompt_filling_context(builds[f"host-{quant}"], 512), "-n", "512", "-t", "0"]
    host = parse(subprocess.run([str(builds[f"host-{quant}"]), *args], capture_output=True).stdout)
    assert host.ok and host.summary_number("tokens") == 512
    out = parse(run_qemu(builds[quant], args).stdout)
    assert out.ok and out.token_sequence() == host.token_sequence()


def test_host_threads_give_the_same_tokens(builds: dict[str, Path], golden_cases: list[dict]) -> None:
    """The thread pool is the runtime's, so the host has it too; any count gives the same tokens."""
    for case in golden_cases[:2]:
        outputs = [
            subprocess.run([str(builds["host-q4"]), *case_args(case), "-j", str(threads)], capture_output=True).stdout
            for threads in (1, 3, 8)
        ]
        sequences = [parse(output).token_sequence() for output in outputs]
        assert sequences[0] == sequences[1] == sequences[2]


def test_threads_option(stories260k: Path, tok512: Path) -> None:
    base = {"model": str(stories260k), "tokenizer": str(tok512)}
    rzv2l = configure({**base, "target": "rzv2l"}, download=False)
    assert rzv2l.threads == rzv2l.default_threads == 2
    qemu = configure({**base, "target": "rzv2l", "hil": "qemu"}, download=False)
    assert qemu.threads == 1 and qemu.default_threads == 2 and qemu.out_dir == rzv2l.out_dir  # no rebuild
    host = configure({**base, "target": "host", "threads": "3"}, download=False)
    assert host.threads == 3 and host.out_dir.name.endswith("-j3")
    assert configure({**base, "target": "host"}, download=False).threads == 1
    with pytest.raises(OptionError, match="runs one thread"):
        configure({**base, "target": "stm32h743", "threads": "2"}, download=False)


# ---- the weights file ----


def test_weights_file_build_maps_model_bin(builds: dict[str, Path], golden_cases: list[dict]) -> None:
    program = builds["q8-file"]
    data = (program.parent / "gen" / "model_data.bin").read_bytes()
    info = weightsfile.read_header(program.parent / "model.bin")
    layout = layouts.for_kernel_set(TARGET.kernel_set if not kernel_options() else "")
    label = "260k q8" + ("" if layout == layouts.REFERENCE else f" {layout}")
    assert info.data_bytes == len(data) and info.label == label and info.version == 1
    assert (program.parent / "model.bin").read_bytes()[64:] == data
    # The program holds no weights of its own: it is far smaller than the linked-in one.
    assert program.stat().st_size < builds["q8"].stat().st_size - len(data) // 2
    case = golden_cases[2]
    linked = parse(run_qemu(builds["q8"], case_args(case)).stdout)
    mapped = parse(run_qemu(program, case_args(case)).stdout)  # model.bin found beside the program
    assert mapped.ok and mapped.token_sequence() == linked.token_sequence()


def _refused(program: Path, weights: Path, message: str) -> None:
    result = run_qemu(program, ["-n", "2", "-w", str(weights)], check=False)
    assert result.returncode == 4, result.stderr
    assert message in result.stderr.decode(), result.stderr.decode()
    assert result.stdout == b""  # refused before anything was generated


def test_weights_file_refuses_corrupt_or_foreign_files(
    builds: dict[str, Path], tmp_path: Path, stories260k: Path, tok512: Path
) -> None:
    program = builds["q8-file"]
    good = (program.parent / "model.bin").read_bytes()

    flipped = bytearray(good)
    flipped[64 + len(good) // 2] ^= 0x40
    (tmp_path / "flipped.bin").write_bytes(bytes(flipped))
    _refused(program, tmp_path / "flipped.bin", "is corrupt: the CRC-32 of its data is")

    (tmp_path / "short.bin").write_bytes(good[:-100])
    _refused(program, tmp_path / "short.bin", "the file is truncated")

    header = bytearray(good)
    header[24] ^= 1  # the data size, without fixing the header's checksum
    (tmp_path / "header.bin").write_bytes(bytes(header))
    _refused(program, tmp_path / "header.bin", "its header's checksum does not match")

    (tmp_path / "other.bin").write_bytes(b"\0" * 200)
    _refused(program, tmp_path / "other.bin", "is not an llmcu weights file")
    _refused(program, tmp_path / "missing.bin", "cannot open the weights file")

    # A genuine weights file of another build (q4), exactly as that build would write it.
    model = codegen.prepare(read_checkpoint(stories260k), read_tokenizer(tok512, 512), QuantPlan.parse("q4", 32))
    layout = weightsfile.describe(model.config, model.plan, model.blobs, len(model.data), "260k q4")
    weightsfile.write_weights_file(tmp_path / "q4.bin", layout, model.data)
    _refused(program, tmp_path / "q4.bin", "does not belong to this program: it holds '260k q4'")
    _refused(program, tmp_path / "q4.bin", "this program was built for '260k q8")


@pytest.mark.fault(
    area="deploy",
    kind="input",
    what="a model.bin of the same model and quant written for the reference kernels' matrix layout, given to a "
    "program built with the optimised kernels (same size and offsets, other byte order)",
    sees=r"does not belong to this program: it holds '260k q8' .*built for '260k q8 neon_panels'",
)
def test_weights_file_of_another_kernel_layout_is_refused(
    builds: dict[str, Path], tmp_path: Path, stories260k: Path, tok512: Path, sees
) -> None:
    if kernel_options() or layouts.for_kernel_set(TARGET.kernel_set) == layouts.REFERENCE:
        pytest.skip("the rzv2l build reads the reference layout")
    model = codegen.prepare(read_checkpoint(stories260k), read_tokenizer(tok512, 512), QuantPlan.parse("q8", 32))
    assert model.weight_layout == layouts.REFERENCE
    built = (builds["q8-file"].parent / "model.bin").read_bytes()
    layout = weightsfile.describe(model.config, model.plan, model.blobs, len(model.data), "260k q8")
    assert layout.data_bytes == len(built) - 64  # same size: only the layout hash tells them apart
    weightsfile.write_weights_file(tmp_path / "rowmajor.bin", layout, model.data)
    result = run_qemu(builds["q8-file"], ["-n", "2", "-w", str(tmp_path / "rowmajor.bin")], check=False)
    assert result.returncode == 4 and result.stdout == b""
    sees(result.stderr.decode())


def test_linked_program_refuses_a_weights_file(builds: dict[str, Path]) -> None:
    result = run_qemu(builds["q8"], ["-w", "model.bin"], check=False)
    assert result.returncode == 2 and b"weights linked in" in result.stderr


def test_weights_file_auto_goes_by_size(stories260k: Path, tok512: Path) -> None:
    plan = QuantPlan.parse("fp32", 32)
    estimate = linux.estimated_data_bytes(stories260k, tok512, plan)
    model = codegen.prepare(read_checkpoint(stories260k), read_tokenizer(tok512, 512), plan)
    assert abs(estimate - len(model.data)) < 0.01 * len(model.data)
    values = {"sdk": "", "weights_file": "auto", "board": "", "hil": "none", "board_ram": 0}
    assert not linux.configure(TARGET, values, stories260k, tok512, plan).weights_file  # 1 MB: linked in
    assert TARGET.linux is not None
    big = dataclasses.replace(TARGET, linux=dataclasses.replace(TARGET.linux, weights_file_above=512 << 10))
    assert linux.configure(big, values, stories260k, tok512, plan).weights_file


# ---- instruction counts (QEMU plugin) ----


def test_instruction_counts_per_token_are_exact_and_repeat(builds: dict[str, Path], tmp_path: Path) -> None:
    args = ["-p", "Once upon a time", "-n", "24", "-t", "0", "-j", "1"]
    emulator = qemu_user.QemuUser(TARGET.run.qemu, TARGET.run.qemu_cpu)
    runs = [qemu_user.run_program(builds["q4"], args, emulator, plugin_dir=tmp_path / "plugin") for _ in range(2)]
    first, second = runs
    assert first.header["unit"] == "instructions" and first.header["clock_hz"] == "0"
    assert [r.cost for r in first.tokens] == [r.cost for r in second.tokens]
    assert all(10_000 < record.cost < 100_000_000 for record in first.tokens)
    # Without the plugin the same program measures nanoseconds.
    plain = parse(run_qemu(builds["q4"], args).stdout)
    assert plain.header["unit"] == "ns" and plain.token_sequence() == first.token_sequence()


def test_plugin_counts_a_known_loop(tmp_path: Path) -> None:
    source = tmp_path / "loop.c"
    source.write_text(
        "#include <stdint.h>\n#include <stdlib.h>\n#include <stdio.h>\n#include <unistd.h>\n"
        'int main(void) { int fd = atoi(getenv("LLMCU_COUNTER_FD")); uint64_t a, b;\n'
        '  read(fd, &a, 8); read(fd, &b, 8); printf("%llu\\n", (unsigned long long)(b - a)); return 0; }\n'
    )
    program = tmp_path / "loop"
    subprocess.run([CROSS_CC, "-O2", "-static", "-o", str(program), str(source)], check=True)
    plugin = qemu_user.plugin_library(tmp_path / "plugin")
    command = qemu_user.QemuUser(TARGET.run.qemu, TARGET.run.qemu_cpu).command(program, [], plugin=plugin)
    # Between two reads: the rest of read() after its svc, the return into main and the next call up to its svc.
    counts = {subprocess.run(command, capture_output=True, check=True).stdout for _ in range(2)}
    assert len(counts) == 1 and 5 < int(counts.pop()) < 200


def test_scons_run_hil_qemu_reports_instructions(builds: dict[str, Path], build_root: Path, stories260k: Path) -> None:
    result = scons(
        ["target=rzv2l", "model=260k", "quant=q4", *kernel_options(), f"build_dir={build_root}", "run", "hil=qemu",
         "prompt=Once upon a time", "steps=20", "temperature=0", f"log_dir={build_root / 'logs'}"],
        stories260k.parent,
    )  # fmt: skip
    assert "Once upon a time" in result.stdout
    assert "20 tokens (5 prompt)" in result.stdout and "instructions/token" in result.stdout
    assert list((build_root / "logs").glob("*-rzv2l-260k-q4/summary.json"))


# ---- toolchains ----


def test_toolchain_sources(tmp_path: Path) -> None:
    assert linux.resolve_toolchain(TARGET, "", {}).cc == CROSS_CC
    assert linux.resolve_toolchain(TARGET, "", {"CROSS_COMPILE": "aarch64-foo-linux-"}).cc == "aarch64-foo-linux-gcc"
    chosen = linux.resolve_toolchain(TARGET, "", {"CC": "aarch64-linux-gnu-gcc -v", "CROSS_COMPILE": "x-"})
    assert chosen.cc == CROSS_CC and chosen.cflags == ("-v",) and chosen.static
    with pytest.raises(OptionError, match="builds for x86_64"):
        linux.check_toolchain(linux.resolve_toolchain(TARGET, "", {"CC": "gcc"}), TARGET)
    with pytest.raises(OptionError, match="not found"):
        linux.check_toolchain(linux.resolve_toolchain(TARGET, "", {"CROSS_COMPILE": "nonexistent-"}), TARGET)
    with pytest.raises(OptionError, match="no such file"):
        linux.resolve_toolchain(TARGET, str(tmp_path / "environment-setup-missing"), {})


def fake_sdk(folder: Path) -> Path:
    """An environment-setup script shaped like a Yocto SDK's, around Debian's cross compiler and its libc."""
    bin_dir = folder / "sysroots" / "x86_64-pokysdk-linux" / "usr" / "bin" / "aarch64-poky-linux"
    bin_dir.mkdir(parents=True)
    (bin_dir / "aarch64-poky-linux-gcc").symlink_to(shutil.which(CROSS_CC) or CROSS_CC)
    script = folder / "environment-setup-aarch64-poky-linux"
    script.write_text(
        f"export SDKTARGETSYSROOT=/usr/aarch64-linux-gnu\n"
        f"export PATH={bin_dir}:/usr/bin:/bin:$PATH\n"
        'export CC="aarch64-poky-linux-gcc  -mcpu=cortex-a55 -fstack-protector-strong  -D_FORTIFY_SOURCE=2 '
        '-Wformat -Wformat-security -Werror=format-security"\n'
        'export CFLAGS=" -O2 -pipe -g -feliminate-unused-debug-types "\n'
        'export LDFLAGS="-Wl,-O1 -Wl,--hash-style=gnu -Wl,--as-needed -fstack-protector-strong -Wl,-z,relro,-z,now"\n'
        'echo "this SDK prints a banner"\n'
    )
    return script


def test_sdk_build_links_against_its_sysroot(tmp_path: Path, stories260k: Path, golden_cases: list[dict]) -> None:
    script = fake_sdk(tmp_path / "sdk")
    chain = linux.resolve_toolchain(TARGET, str(script), {})
    assert chain.cc.endswith("aarch64-poky-linux-gcc") and not chain.static
    assert "-mcpu=cortex-a55" in chain.cflags and "-pipe" in chain.cflags and "-Wl,-O1" in chain.ldflags
    assert chain.sysroot == "/usr/aarch64-linux-gnu"
    scons(["target=rzv2l", "model=260k", "kernels=ref", f"sdk={script}", f"build_dir={tmp_path}"], stories260k.parent)
    program = tmp_path / "rzv2l" / "260k-fp32-refkernels" / "llmcu"
    assert b"ld-linux-aarch64.so.1" in program.read_bytes()  # dynamically linked: the SDK has the board's libc
    case = golden_cases[1]
    emulator = qemu_user.QemuUser(TARGET.run.qemu, TARGET.run.qemu_cpu, chain.sysroot)
    command = emulator.command(program, [*case_args(case), "-q"])
    assert subprocess.run(command, capture_output=True, check=True).stdout.decode() == case["stdout"]


def test_help_explains_the_linux_options(stories260k: Path) -> None:
    result = scons(["-h"], stories260k.parent)
    for name in ("sdk", "weights_file", "threads"):
        assert f"\n{name}:" in result.stdout
    assert "environment-setup" in result.stdout and "user@host[:port]" in result.stdout


def test_run_without_board_or_qemu_says_how(build_root: Path, stories260k: Path) -> None:
    result = scons(
        ["target=rzv2l", "model=260k", "quant=q8", *kernel_options(), f"build_dir={build_root}", "run"],
        stories260k.parent,
        check=False,
    )
    assert result.returncode != 0 and "board=user@host[:port]" in result.stderr and "hil=qemu" in result.stderr


def test_destinations() -> None:
    assert destination.parse_destination("root@192.168.1.50") == destination.Destination("root", "192.168.1.50")
    assert destination.parse_destination("me@rzv2l:2222") == destination.Destination("me", "rzv2l", 2222)
    assert destination.parse_destination("[::1]:22").login == "::1"
    for bad in ("-oProxyCommand=x", "a@b:99999", "a b", "root@host:port"):
        with pytest.raises(OptionError):
            destination.parse_destination(bad)


# ---- deploying over SSH to a real sshd on localhost ----


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """OpenSSH's sshd on a free port of 127.0.0.1, as this user, accepting one test key; yields the environment
    (LLMCU_SSH_OPTS, LLMCU_REMOTE_EXEC) and the destination."""
    daemon = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get("PATH", ""))
    if daemon is None or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip("needs openssh-server and openssh-client (tools/setup.sh installs them)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        Path("/run/sshd").mkdir(mode=0o755)  # sshd's privilege separation directory, as Debian's service makes it
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    port = _free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\n"
    )
    host_key = " ".join((home / "host_key.pub").read_text().split()[:2])
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    process = subprocess.Popen([daemon, "-D", "-e", "-f", str(home / "sshd_config")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                assert process.stderr is not None
                pytest.fail(f"sshd did not start: {process.stderr.read().decode()}")
            time.sleep(0.05)
        common = f"-F /dev/null -o UserKnownHostsFile={home / 'known_hosts'} -o IdentitiesOnly=yes"
        yield {
            "destination": f"{getpass.getuser()}@127.0.0.1:{port}",
            "LLMCU_SSH_OPTS": f"{common} -i {home / 'client_key'}",
            "wrong_key": f"{common} -i {home / 'other_key'}",
            "LLMCU_REMOTE_EXEC": f"{QEMU} -cpu max",
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


def _scons_with_env(args: list[str], models: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "SCons", "-Q", *args],
        cwd=ROOT,
        env={**os.environ, "LLMCU_MODELS": str(models), "LLMCU_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _remote_folders() -> set[str]:
    return {path.name for path in Path("/tmp").glob("llmcu-*")}


def test_scons_run_deploys_over_ssh(
    sshd: dict[str, str], builds: dict[str, Path], build_root: Path, stories260k: Path, golden_cases: list[dict]
) -> None:
    """`scons run board=...` with a weights file: both files go over SSH, the program runs on the "board" (here
    through qemu-aarch64, the LLMCU_REMOTE_EXEC wrapper), its output comes back as protocol, nothing is left."""
    before = _remote_folders()
    env = {key: sshd[key] for key in ("LLMCU_SSH_OPTS", "LLMCU_REMOTE_EXEC")}
    case = golden_cases[0]
    expected = subprocess.run(
        [str(builds["host-q8"]), "-p", case["prompt"], "-n", "60", "-t", "0", "-q"], capture_output=True, check=True
    ).stdout.decode()
    result = _scons_with_env(
        ["target=rzv2l", "model=260k", "quant=q8", "weights_file=yes", *kernel_options(), f"build_dir={build_root}",
         "run", f"board={sshd['destination']}", f"prompt={case['prompt']}", "steps=60", "temperature=0",
         f"log_dir={build_root / 'ssh-logs'}"],
        stories260k.parent,
        env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert expected.strip() in result.stdout  # the host's q8 text
    assert "60 tokens (5 prompt)" in result.stdout and "ns/token" in result.stdout
    assert _remote_folders() == before
    logs = list((build_root / "ssh-logs").glob("*-rzv2l-260k-q8/summary.json"))
    assert logs and '"runner": "board"' in logs[0].read_text()


def test_ssh_deploy_streams_the_protocol(sshd: dict[str, str], builds: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setenv("LLMCU_SSH_OPTS", sshd["LLMCU_SSH_OPTS"])
    pieces: list[bytes] = []
    output: RunOutput = sshdeploy.deploy_and_run(
        destination.parse_destination(sshd["destination"]),
        builds["q4"],
        None,
        lambda weights: ["-p", "Tom and his dog", "-n", "30", "-t", "0", "-j", "2"],
        exec_prefix=sshd["LLMCU_REMOTE_EXEC"],
        on_text=pieces.append,
    )
    assert output.ok and len(output.tokens) == 30 and b"".join(pieces) == output.text
    local = parse(run_qemu(builds["q4"], ["-p", "Tom and his dog", "-n", "30", "-t", "0"]).stdout)
    assert output.token_sequence() == local.token_sequence()


def test_ssh_errors_say_what_is_wrong(sshd: dict[str, str], builds: dict[str, Path], monkeypatch) -> None:
    def attempt(where: str, args: tuple[str, ...] = ("-n", "1")) -> None:
        sshdeploy.deploy_and_run(
            destination.parse_destination(where),
            builds["q8"],
            None,
            lambda _: list(args),
            exec_prefix=sshd["LLMCU_REMOTE_EXEC"],
        )

    monkeypatch.setenv("LLMCU_SSH_OPTS", sshd["wrong_key"])
    with pytest.raises(sshdeploy.SshAuthError, match="authorized_keys"):
        attempt(sshd["destination"])
    monkeypatch.setenv("LLMCU_SSH_OPTS", sshd["LLMCU_SSH_OPTS"])
    with pytest.raises(sshdeploy.SshUnreachableError, match=r"cannot reach 127\.0\.0\.1 on port"):
        attempt(f"{getpass.getuser()}@127.0.0.1:{_free_port()}")
    # The program fails on the board: reported with what it said, and the folder is removed all the same.
    before = _remote_folders()
    with pytest.raises(sshdeploy.SshError, match=r"(?s)failed on .*bad value 'many' for -n"):
        attempt(sshd["destination"], ("-n", "many"))
    assert _remote_folders() == before


def test_console_on_the_board_over_ssh(
    sshd: dict[str, str], builds: dict[str, Path], build_root: Path, stories260k: Path, tmp_path: Path, monkeypatch
) -> None:
    """`scons console board=...`: the program and its weights file are copied over SSH, the console runs there on
    ssh's pipes (a prompt, a refused line, another prompt), and the folder is gone when the session ends."""
    from llmcu.builder.settings import configure
    from llmcu.device import session

    for key in ("LLMCU_SSH_OPTS", "LLMCU_REMOTE_EXEC"):
        monkeypatch.setenv(key, sshd[key])
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    before = _remote_folders()
    settings = configure({"target": "rzv2l", "model": "260k", "quant": "q8", "weights_file": "yes",
                                  **dict(option.split("=", 1) for option in kernel_options()),
                                  "build_dir": str(build_root), "board": sshd["destination"], "steps": "40",
                                  "temperature": "0"})  # fmt: skip
    assert settings.out_dir == builds["q8-file"].parent
    exchanges = session.console(settings, run_options(option_values({"log_dir": str(tmp_path)})),
                                lines=["Once upon a time", "/raw run steps=x", "The dog"])  # fmt: skip
    assert [(e.kind, e.status) for e in exchanges] == [("prompt", "ok"), ("raw", "rejected"), ("prompt", "ok")]
    expected = subprocess.run([str(builds["host-q8"]), "-p", "Once upon a time", "-n", "40", "-t", "0", "-q"],
                              capture_output=True, check=True).stdout.decode()  # fmt: skip
    assert exchanges[0].text == expected
    assert _remote_folders() == before


@pytest.mark.slow
def test_15m_shaped_model_goes_to_a_weights_file(tmp_path: Path, tokenizer_32k: Path) -> None:
    from llmcu.core.config import ModelConfig
    from llmcu.model.checkpoint import random_checkpoint, write_checkpoint

    write_checkpoint(tmp_path / "r15m.bin", random_checkpoint(ModelConfig(288, 768, 6, 6, 6, 32000, 256, True)))
    common = [f"model={tmp_path / 'r15m.bin'}", f"tokenizer={tokenizer_32k}", "quant=q4", "fit=absmax",
              f"build_dir={tmp_path}"]  # fmt: skip
    scons(["target=rzv2l", *kernel_options(), *common], tokenizer_32k.parent)
    scons(["target=host", "kernels=ref", *common], tokenizer_32k.parent)
    program = next((tmp_path / "rzv2l").glob("r15m-q4*/llmcu"))
    weights = program.parent / "model.bin"
    assert weights.stat().st_size > 8 << 20 and program.stat().st_size < 4 << 20  # auto: over 8 MiB goes to a file
    host = next((tmp_path / "host").glob("r15m-q4*/llmcu"))
    args = ["-p", "Once upon a time", "-n", "12", "-t", "0"]
    expected = parse(subprocess.run([str(host), *args], capture_output=True, check=True).stdout)
    for threads in ("1", "2"):
        out = parse(run_qemu(program, [*args, "-j", threads]).stdout)
        assert out.ok and out.token_sequence() == expected.token_sequence()


# ---- `scons debug`: gdb on the program under qemu-aarch64, and under gdbserver on the board over SSH ----

needs_gdb = pytest.mark.skipif(shutil.which("gdb-multiarch") is None, reason="gdb-multiarch missing (tools/setup.sh)")
BREAK_IN_FORWARD = ["break llmcu_forward", "continue", "print pos", "print token", "bt 2", "continue", "print pos"]


def _debug_settings(build_root: Path, models: Path, monkeypatch, **options: str) -> BuildSettings:
    monkeypatch.setenv("LLMCU_MODELS", str(models))
    values = {"target": "rzv2l", "model": "260k", "quant": "q8", "build_dir": str(build_root), "prompt": "Once",
              "steps": "4", **dict(option.split("=", 1) for option in kernel_options()), **options}  # fmt: skip
    return configure(values)


def _check_gdb_session(text: str) -> None:
    assert "Breakpoint 1, llmcu_forward (token=" in text and "at runtime_c/transformer.c" in text
    assert "$1 = 0" in text and "$2 = 1" in text  # pos 0, BOS
    assert "runtime_c/gen.c" in text  # the caller (llmcu_next), by its source name
    assert "$3 = 1" in text  # the next forward pass


@needs_gdb
def test_debug_stops_the_program_under_qemu_user(builds, build_root, stories260k, monkeypatch, capfd) -> None:
    from llmcu.device import debug, debug_linux, localport

    settings = _debug_settings(build_root, stories260k.parent, monkeypatch, hil="qemu")
    port = localport.free_port()
    assert debug.debug(settings, run_options(option_values({})), port=port, commands=BREAK_IN_FORWARD, batch=True) == 0
    _check_gdb_session(capfd.readouterr().out)
    assert not debug_linux.listening(port)  # the stub is gone with the session


GDBSERVER_STANDIN = """#!/bin/sh
# gdbserver's stand-in on the x86 "board": the aarch64 program under qemu-aarch64's gdb stub, announced with
# gdbserver's own ready line once the stub listens.
port=$1; shift
{qemu} -cpu max -g "$port" "$@" &
pid=$!
hex=$(printf '%04X' "$port")
tries=0
while ! grep -q ":$hex [0-9A-F]*:[0-9A-F]* 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
    tries=$((tries + 1)); [ "$tries" -gt 1000 ] && exit 1; sleep 0.01
done
echo "Listening on port $port" >&2
wait "$pid"
"""


@needs_gdb
def test_debug_on_the_board_runs_gdbserver_over_ssh(sshd, builds, build_root, stories260k, monkeypatch) -> None:
    """The program goes to the board as for `run`, gdbserver (here a stand-in running qemu-aarch64 -g) starts
    there, and gdb reaches it through the SSH connection's forwarded port; nothing is left on the board."""
    from llmcu.device import debug, debug_linux, localport

    standin = build_root / "gdbserver-standin"
    standin.write_text(GDBSERVER_STANDIN.format(qemu=QEMU))
    standin.chmod(0o755)
    monkeypatch.setenv("LLMCU_SSH_OPTS", sshd["LLMCU_SSH_OPTS"])
    monkeypatch.setenv(debug_linux.ENV_GDBSERVER, f"{standin} {{port}}")
    settings = _debug_settings(build_root, stories260k.parent, monkeypatch, board=sshd["destination"])
    before = _remote_folders()
    local, remote = localport.free_port(), _free_port()  # two ports: here the board is this machine
    server = debug_linux.start_board_server(settings, local, remote)
    try:
        assert server.address == f"localhost:{local}" and len(_remote_folders() - before) == 1
        gdb = debug.find_gdb(arm=True, names=debug_linux.LINUX_GDBS)
        session_commands = [f"target remote {server.address}", *BREAK_IN_FORWARD, "kill"]
        command = debug.gdb_command(gdb, settings.out_dir / "llmcu", settings, session_commands, batch=True)
        session = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    _check_gdb_session(session.stdout)
    assert _remote_folders() == before


def test_debug_without_gdbserver_on_the_board_says_what_to_install(sshd, builds, build_root, stories260k,
                                                                   monkeypatch) -> None:  # fmt: skip
    from llmcu.core.errors import LlmcuError
    from llmcu.device import debug_linux, localport

    monkeypatch.setenv("LLMCU_SSH_OPTS", sshd["LLMCU_SSH_OPTS"])
    monkeypatch.setenv(debug_linux.ENV_GDBSERVER, "no-such-gdbserver :{port}")
    settings = _debug_settings(build_root, stories260k.parent, monkeypatch, board=sshd["destination"])
    before = _remote_folders()
    with pytest.raises(LlmcuError, match=r"gdbserver is not installed on .*IMAGE_INSTALL"):
        debug_linux.start_board_server(settings, localport.free_port(), _free_port())
    assert _remote_folders() == before
