"""`scons debug` (llmcu.device.debug): gdb on the QEMU twin and on the host program, in batch sessions that stop
in the forward pass and read its variables with the sources found through the build's path mapping; a board's
pyOCD gdb server at the probe boundary; a missing gdb named with its package."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from unittest.mock import create_autospec

import pytest
from pyocd.gdbserver import GDBServer

from llmcu.builder.settings import BuildSettings, configure, option_values, run_options
from llmcu.core.paths import ROOT
from llmcu.device import debug, localport
from llmcu.device.probes import ProbeInfo
from support.flash_fakes import FakeFactory

needs_gdb = pytest.mark.skipif(shutil.which("gdb-multiarch") is None, reason="gdb-multiarch missing (tools/setup.sh)")
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)
BREAK_IN_FORWARD = ["break llmcu_forward", "continue", "print pos", "print token", "bt 2", "continue", "print pos"]


def _settings(target: str, root: Path, models: Path, monkeypatch) -> BuildSettings:
    monkeypatch.setenv("LLMCU_MODELS", str(models))
    return configure({"target": target, "model": "260k", "quant": "q8", "build_dir": str(root),
                              "prompt": "Once", "steps": "4"})  # fmt: skip


# gdb annotates an argument with its value at entry when the optimiser kept it ("token=token@entry=1").
FORWARD_AT_BOS = re.compile(r"Breakpoint 1, llmcu_forward \(token=(token@entry=)?1, pos=(pos@entry=)?0\) at "
                            r"runtime_c/transformer\.c")  # fmt: skip


def _check_session(text: str) -> None:
    assert FORWARD_AT_BOS.search(text), text
    assert "$1 = 0" in text and "$2 = 1" in text  # pos 0, BOS
    assert "in llmcu_next (" in text and "runtime_c/gen.c" in text  # the caller, by its source name
    assert "embed(s.x" in text  # the source line itself: gdb found the file through the mapping
    assert "$3 = 1" in text  # the next forward pass


@needs_qemu
@needs_gdb
def test_gdb_stops_the_twin_in_the_forward_pass(q8_build_root, stories260k, monkeypatch, capfd) -> None:
    settings = _settings("qemu-m7", q8_build_root, stories260k.parent, monkeypatch)
    port = localport.free_port()
    status = debug.debug(settings, run_options(option_values({})), port=port, commands=BREAK_IN_FORWARD, batch=True)
    assert status == 0
    _check_session(capfd.readouterr().out)


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb missing")
def test_gdb_on_the_host_program(q8_build_root, stories260k, monkeypatch, capfd) -> None:
    settings = _settings("host", q8_build_root, stories260k.parent, monkeypatch)
    commands = ["break llmcu_forward", "run", "print pos", "print token", "bt 2", "continue", "print pos", "kill"]
    assert debug.debug(settings, run_options(option_values({})), commands=commands, batch=True) == 0
    text = capfd.readouterr().out
    assert FORWARD_AT_BOS.search(text), text
    assert "$1 = 0" in text and "$3 = 1" in text and "embed(s.x" in text


def test_a_missing_gdb_names_its_package() -> None:
    with pytest.raises(debug.GdbNotFoundError, match=r"apt-get install gdb-multiarch"):
        debug.find_gdb(arm=True, which=lambda name: None)
    assert debug.find_gdb(arm=True, which=lambda name: f"/opt/{name}") == "/opt/arm-none-eabi-gdb"
    assert debug.find_gdb(arm=True, which=lambda name: "/usr/bin/x" if name == "gdb-multiarch" else None)


def test_gdb_gets_the_source_mapping(tmp_path, stories260k, monkeypatch) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    settings = configure({"target": "qemu-m7", "model": "260k", "quant": "q8", "build_dir": str(tmp_path)})
    command = debug.gdb_command("gdb-multiarch", Path("fw.elf"), settings, ["target extended-remote localhost:1"])
    joined = " ".join(command)
    assert f"set substitute-path /llmcu-build {tmp_path.resolve()}" in joined
    assert f"directory {ROOT}" in joined
    assert command[-1] == "fw.elf" and joined.index("substitute-path") < joined.index("target extended-remote")


def test_board_server_on_the_chosen_probe(tmp_path, stories260k, monkeypatch) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    settings = configure({"target": "stm32h743", "model": "260k", "quant": "q8", "build_dir": str(tmp_path)})
    factory = FakeFactory([ProbeInfo("066DFF485457725187092434", "ST-LINK/V2-1"), ProbeInfo("0002", "other")])
    servers: list = []

    def server_factory(session):  # pyOCD's GDBServer, its methods' signatures kept (autospec)
        servers.append(create_autospec(GDBServer, instance=True))
        return servers[-1]

    server = debug.start_board_server(settings, settings.images[0], "2434", 4444, session_factory=factory,
                                      server_factory=server_factory, flash=False)  # fmt: skip
    ((probe, options),) = factory.opened
    assert probe.uid == "066DFF485457725187092434"  # probe= chose it, as for `flash`
    assert options == {"target_override": "stm32h743xx", "gdbserver_port": 4444}
    servers[0].start.assert_called_once_with()
    assert server.address == "localhost:4444" and server.gdb_setup == ("monitor reset halt",)
    server.stop()
    servers[0].stop.assert_called_once_with()
    assert factory.sessions[0].closed
    with pytest.raises(Exception, match="no debug probe"):
        debug.start_board_server(settings, settings.images[0], "", 4444, session_factory=FakeFactory([]),
                                 server_factory=server_factory, flash=False)  # fmt: skip
