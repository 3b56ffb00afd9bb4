"""The peer benchmark (llama.cpp beside llmcu): its bookkeeping here; in the slow run, llama.cpp built from the pinned
sdist for the host and aarch64, running llmcu's GGUF files: on the host it reproduces llama2.c's run.c token for
token, as llmcu does from the same file, and under qemu-aarch64 both programs are counted the same way."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from llmcu.reports import bench, peer, peer_build
from llmcu.reports.peer import PeerError, PeerRow
from llmcu.reports.peer_build import LLAMA_CPP, MACHINES, PeerBuildError, PeerSource


def a55(model: str, quant: str, llmcu: float, theirs: float, numerics: str = "exact", goal: float | None = None
        ) -> PeerRow:  # fmt: skip
    return PeerRow("A55 (qemu-aarch64)", model, quant, numerics, peer.GGUF_TYPES[quant], llmcu, theirs,
                   round(theirs / llmcu, 3), "instructions/token", run_lengths=(32, 96), goal=goal)  # fmt: skip


def test_the_table_shows_both_figures_the_advantage_and_the_goal() -> None:
    host = PeerRow("host", "15m-shaped", "q4", "exact", "Q4_0", 900.0, 1000.0, 0.9, "tok/s", steps=128,
                   llmcu_tok_per_s={"min": 850.0, "median": 900.0, "max": 950.0},
                   peer_tok_per_s={"min": 990.0, "median": 1000.0, "max": 1010.0}, same_text=False,
                   goal=1.2)  # fmt: skip
    rows = [a55("110m-shaped", "q8", 20e6, 32e6, goal=1.5), a55("260k", "fp32", 0.9e6, 3.1e6), host]
    lines = peer.markdown(rows)
    assert "0c1e57098" in lines[0]
    assert lines[4] == (
        "| A55 (qemu-aarch64) | 110m-shaped | Q8_0 | exact | 32.00 M | 20.00 M | 1.60x | >= 1.50x: met |  |"
    )
    assert lines[5].endswith("| 3.44x |  |  |")  # stories260K: shown, held to no goal
    assert lines[6] == "| host | 15m-shaped | Q4_0 | exact | 1,000 tok/s | 900 tok/s | 0.90x | >= 1.20x: missed | no |"
    # an advantage just under its goal is not rounded up to it beside "missed"
    close = a55("110m-shaped", "q4", 20e6, 23.98e6, goal=1.2)
    assert "| 1.199x | >= 1.20x: missed |" in peer.markdown([close])[4]


def test_results_round_trip_and_a_new_run_replaces_its_own_rows(tmp_path: Path) -> None:
    old = [a55("15m-shaped", "q8", 4e6, 6e6), a55("15m-shaped", "q4", 5e6, 7e6)]
    peer.write_results(old, tmp_path)
    assert "| 15m-shaped | Q4_0 |" in (tmp_path / "peer.md").read_text()
    loaded = peer.load_rows(tmp_path / "peer.json")
    assert loaded == old
    merged = bench.merge(loaded, [a55("15m-shaped", "q4", 3e6, 7e6), a55("110m-shaped", "q4", 30e6, 33e6)])
    assert [(row.model, row.quant, row.llmcu) for row in merged] == [
        ("15m-shaped", "q8", 4e6), ("15m-shaped", "q4", 3e6), ("110m-shaped", "q4", 30e6)]  # fmt: skip


def test_the_goals_are_the_issues() -> None:
    goals = peer.peer_goals()
    assert goals[("a55", "q8", "exact")] == goals[("a55", "q4", "exact")] == 1.5
    assert goals[("a55", "fp32", "fast")] == 1.25 and goals[("a55", "fp32", "exact")] == 1.0
    assert goals[("host", "q8", "exact")] == goals[("host", "q4", "exact")] == 1.2


def test_the_two_programs_texts_are_compared_without_the_prompt() -> None:
    assert peer._same_text("Once upon a time, there was\n", ", there was\n")
    assert not peer._same_text("Once upon a time, there was\n", ", there is\n")


def test_llama_cpp_s_summary_line_is_read_and_its_absence_is_an_error() -> None:
    stderr = b"load...\npeer prompt_tokens=5 generated=59 seconds=0.5 tok_per_s=118.00\n"
    assert peer._peer_summary(stderr) == {"prompt_tokens": "5", "generated": "59", "seconds": "0.5",
                                          "tok_per_s": "118.00"}  # fmt: skip
    with pytest.raises(PeerError, match="no summary"):
        peer._peer_summary(b"segmentation fault\n")


def test_unknown_models_and_machines_are_refused() -> None:
    with pytest.raises(PeerError, match="known are 260k, 15m-shaped, 110m-shaped"):
        peer.gguf_files("7b")
    with pytest.raises(PeerBuildError, match="known are host, aarch64"):
        peer_build.peer_program("riscv64")
    with pytest.raises(PeerError, match="machine 'm7' is not one of a55, host"):
        peer.run_peer(["260k"], ["q8"], ["m7"])
    # a quant or model name that does not exist is named before any row is built or run
    with pytest.raises(PeerError, match="quant 'f32' is not one of fp32, q8, q4"):
        peer.run_peer(["260k"], ["q8", "f32"], ["host"], progress=pytest.fail)
    with pytest.raises(PeerError, match="model '15m' is not one of 260k"):
        peer.run_peer(["15m"], ["q8"], ["a55"], progress=pytest.fail)


def test_each_machine_is_built_for_the_instruction_sets_llmcu_uses() -> None:
    host = MACHINES["host"].configure_command(Path("/src"), Path("/b"))
    assert "-DGGML_AVX2=ON" in host and "-DGGML_FMA=ON" in host and "-DGGML_NATIVE=OFF" in host
    assert not any(arg.startswith("-DCMAKE_TOOLCHAIN_FILE") for arg in host)
    arm = MACHINES["aarch64"].configure_command(Path("/src"), Path("/b"))
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in arm
    toolchain = next(arg for arg in arm if arg.startswith("-DCMAKE_TOOLCHAIN_FILE=")).split("=", 1)[1]
    assert "-static" in Path(toolchain).read_text()


def fake_pip(monkeypatch: pytest.MonkeyPatch, content: bytes | None, returncode: int = 0) -> list[list[str]]:
    """subprocess.run answering pip download: writes the archive with ``content`` into -d's folder."""
    calls: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess:
        calls.append(command)
        if content is not None:
            folder = Path(command[command.index("-d") + 1])
            (folder / LLAMA_CPP.archive_name).write_bytes(content)
        return subprocess.CompletedProcess(command, returncode, "", "ERROR: no matching distribution" if returncode
                                           else "")  # fmt: skip

    monkeypatch.setattr(peer_build.subprocess, "run", run)
    return calls


def test_a_download_with_another_sha256_is_refused_and_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:  # fmt: skip
    calls = fake_pip(monkeypatch, b"not the sdist")
    with pytest.raises(PeerBuildError, match=f"expected {LLAMA_CPP.sha256}"):
        peer_build.fetch_sdist(tmp_path, progress=lambda line: None)
    assert "llama-cpp-python==0.3.36" in calls[0] and "--no-binary" in calls[0]
    assert list(tmp_path.iterdir()) == []


def test_pip_s_failure_is_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_pip(monkeypatch, None, returncode=1)
    with pytest.raises(PeerBuildError, match="no matching distribution"):
        peer_build.fetch_sdist(tmp_path, progress=lambda line: None)


def test_an_sdist_without_llama_cpp_is_refused_and_leaves_no_tree(tmp_path: Path) -> None:
    (tmp_path / "llama_cpp_python-9.9").mkdir()
    (tmp_path / "llama_cpp_python-9.9" / "README.md").write_text("no vendor folder\n")
    archive = tmp_path / "cache" / "llama_cpp_python-9.9.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(tmp_path / "llama_cpp_python-9.9", arcname="llama_cpp_python-9.9")
    source = PeerSource("llama-cpp-python", "9.9", peer_build._sha256(archive), "0" * 40, "2026-01-01")
    with pytest.raises(PeerBuildError, match=r"holds no vendor/llama\.cpp"):
        peer_build.source_tree(archive.parent, source, progress=lambda line: None)
    assert sorted(path.name for path in archive.parent.iterdir()) == [archive.name]


# -------------------------------------------------------------------------------- llama.cpp itself (slow run)


@pytest.mark.slow
def test_llama_cpp_reproduces_run_c_from_llmcus_gguf_as_llmcu_does(golden_cases: list[dict], stories260k: Path,
                                                                   tok512: Path) -> None:  # fmt: skip
    case = next(c for c in golden_cases if c["temperature"] == 0 and c["prompt"] == "Once upon a time"
                and c["steps"] == 256)  # fmt: skip
    program = peer_build.peer_program("host", progress=print)
    gguf = peer.gguf_files("260k", progress=print)["fp32"]
    result = subprocess.run([str(program), "-m", str(gguf), "-p", case["prompt"], "-n", "256", "-t", "1"],
                            capture_output=True, check=True)  # fmt: skip
    assert case["prompt"] + result.stdout.decode() == case["stdout"]
    # llmcu's host program from the same file, in the benchmark's interleaved rounds: the same text
    row = peer.host_row("260k", "fp32", "exact", runs=1, progress=print)
    assert row.same_text is True
    assert row.llmcu > 0 and row.peer > 0 and row.advantage == round(row.llmcu / row.peer, 3)


@pytest.mark.slow
def test_both_programs_are_counted_the_same_way_under_qemu_aarch64() -> None:
    row = peer.a55_row("260k", "q8", "exact", progress=print)
    counts = row.details["whole_process_counts"]
    for who in ("llmcu", "peer"):
        short, long = counts[who]
        assert long > short > 0
    assert row.run_lengths == peer.RUN_LENGTHS["260k"]
    assert row.llmcu == round((counts["llmcu"][1] - counts["llmcu"][0]) / 192)
    # stories260K is where llama.cpp's fixed cost per token (graph building, ~2-3 M instructions) dominates
    assert row.advantage > 3
