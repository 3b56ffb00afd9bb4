"""The build system under stress (issue 7, "Build system"): interrupted builds, exact rebuilds, parallel and
reproducible builds, and bad build inputs.

Every build here runs in a copy of the source tree (the parts a build reads), made once per module, so that
the results do not depend on edits other people make to the checkout while the tests run, and so that tests
may change templates, runtime sources and target files. Build directories live inside those copies and are
given relative to them, as a user's would be; a reproducible build must not depend on where the tree is.

Interruptions are made deterministic with test-only wrappers, not hooks in the product: a small Python
launcher that runs scons with the atomic writer patched to stop after a named generated file, and compiler
wrappers first in PATH that write half of a linked output and stop. The test then kills the whole process
group, as a closed terminal or an OOM kill would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcu.builder import templating
from llmcu.core import fileio
from llmcu.core.errors import LlmcuError, OptionError
from llmcu.platform.targets import load_target
from support.build import ROOT, scons

TREE_PARTS = ("SConstruct", "site_scons", "runtime_c", "targets", "models")
Q8 = ["model=260k", "quant=q8"]
GEN = {
    "gen/model_config.h",
    "gen/model_weights.c",
    "gen/model_data.S",
    "gen/model_data.bin",
    "quant_report.json",
    "quant_report.md",
}
FIRMWARE_GEN = GEN | {"gen/firmware.ld"}
REPORT = {"memory_report.json", "memory_report.md", "firmware.hex", "firmware.bin"}
# --debug=explain names a command with several outputs by its first one: codegen, the firmware report.
GEN_STEP = "gen/model_config.h"
REPORT_STEP = "memory_report.json"
# What must be bit-identical between two builds of the same inputs.
COMPARED = {
    "host": sorted(GEN | {"llmcu"}),
    "qemu-m7": sorted(FIRMWARE_GEN | REPORT | {"firmware.elf"}),
}


def copy_tree(source: Path, dest: Path) -> Path:
    """The parts of an llmcu checkout a build reads (no build outputs, caches or git metadata)."""
    dest.mkdir(parents=True)
    for part in TREE_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source / part, dest / part)
    return dest


def out_dir(tree: Path, build_dir: str, target: str) -> Path:
    return tree / build_dir / target / "260k-q8"


def differing(out: Path, ref: Path, target: str) -> list[str]:
    """Outputs of ``out`` whose bytes differ from ``ref``'s (missing counts as differing)."""
    return [
        name
        for name in COMPARED[target]
        if not (out / name).is_file() or (out / name).read_bytes() != (ref / name).read_bytes()
    ]


def altered(checkpoint: bytes) -> bytes:
    """The same checkpoint with 2,000 weights of the embedding table scaled: same size and shape, different
    quantized data, so the preset still accepts it."""
    import numpy as np

    floats = np.frombuffer(checkpoint, dtype="<f4", offset=28).copy()  # after the 7-int header
    floats[1000:3000] *= 1.5
    return checkpoint[:28] + floats.tobytes()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, stories260k: Path, tok512: Path) -> dict[str, Path]:
    """Two model directories for the 260k preset: the real stories260K ("a") and a changed copy ("b")."""
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for name, data in (("a", stories260k.read_bytes()), ("b", altered(stories260k.read_bytes()))):
        folder = root / name
        folder.mkdir()
        (folder / "stories260K.bin").write_bytes(data)
        shutil.copy(tok512, folder / "tok512.bin")
        dirs[name] = folder
    return dirs


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(ROOT, tmp_path_factory.mktemp("snap") / "tree")


@pytest.fixture(scope="module")
def reference(snapshot: Path, models: dict[str, Path]) -> dict[str, Path]:
    """Clean -j1 builds of host and qemu-m7 (q8, stories260K) with the default build directory (the two side by
    side, which test_parallel_builds_do_not_interfere shows is safe)."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda target: scons([f"target={target}", *Q8], models["a"], cwd=snapshot), COMPARED))
    return {target: out_dir(snapshot, "build", target) for target in COMPARED}


def build_args(target: str, build_dir: str) -> list[str]:
    return [f"target={target}", *Q8, f"build_dir={build_dir}"]


def scons_env(models_dir: Path, path_prefix: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, LLMCU_MODELS=str(models_dir), LLMCU_OFFLINE="1")
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return env


def up_to_date(tree: Path, args: list[str], models_dir: Path, path_prefix: Path | None = None) -> bool:
    """`scons -q`: exit status 0 only when every target is up to date."""
    result = subprocess.run(
        [sys.executable, "-m", "SCons", "-Q", "-q", *args],
        cwd=tree,
        env=scons_env(models_dir, path_prefix),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode == 0


# ----------------------------------------------------------------------------------- interrupted builds

# Runs scons with llmcu's atomic writer patched to stop, for good, right after it has put the named file in
# place: the generated directory is then half new and half old, the worst moment to be killed.
STALL_CODEGEN = """
import os, sys, time
tree, marker, point, pause = sys.argv[1:5]
sys.path.insert(0, os.path.join(tree, "site_scons"))
from llmcu.core import fileio
real = fileio.write_bytes_atomic
def stalling(path, data):
    real(path, data)
    if os.path.basename(str(path)) == point:
        open(marker, "w").close()
        time.sleep(float(pause))
fileio.write_bytes_atomic = stalling  # codegen imports it after this, and write_text_atomic calls it
sys.argv = ["scons", *sys.argv[5:]]
import SCons.Script
SCons.Script.main()
"""

# A compiler wrapper: the real compiler, except that while the file `stall-link` sits beside it, a link writes
# its output, cuts it to half (what a killed linker leaves) and stops.
STALL_LINK = """#!/bin/sh
here=$(dirname "$0")
if [ -e "$here/stall-link" ]; then
    case " $* " in *" -c "*) ;; *)
        out=; prev=
        for arg in "$@"; do [ "$prev" = "-o" ] && out=$arg; prev=$arg; done
        [ -n "$out" ] || exec "{real}" "$@"  # gcc --version and the like (SCons asks)
        "{real}" "$@" || exit $?
        size=$(wc -c < "$out")
        truncate -s $((size / 2)) "$out"
        touch "$here/stalled"
        exec sleep 3600
    esac
fi
exec "{real}" "$@"
"""


def compiler_wrappers(folder: Path, script: str = STALL_LINK, **fields: object) -> Path:
    """``folder`` holding gcc and arm-none-eabi-gcc as ``script`` (formatted with the real compiler's path as
    ``real`` and ``fields``), to put first in PATH."""
    folder.mkdir()
    for name in ("gcc", "arm-none-eabi-gcc"):
        real = shutil.which(name)
        assert real is not None, name
        (folder / name).write_text(script.format(real=real, **fields))
        (folder / name).chmod(0o755)
    return folder


def interrupted(
    command: list[str], tree: Path, models_dir: Path, marker: Path, how: signal.Signals, path_prefix: Path
) -> str:
    """Start a build in its own process group, wait until it reaches the stall point, then signal the whole
    group (SIGKILL: nothing runs after it; SIGINT: what Ctrl-C sends). Returns the build's output."""
    process = subprocess.Popen(
        command,
        cwd=tree,
        env=scons_env(models_dir, path_prefix),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the build never reached the stall point:\n{process.communicate()[0]}")
        time.sleep(0.05)
    os.killpg(process.pid, how)
    output = process.communicate(timeout=60)[0]
    if how != signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError):  # the stalled wrapper's sleep, if it outlived its parent
            os.killpg(process.pid, signal.SIGKILL)
    return output


@pytest.mark.parametrize(
    ("target", "point", "how"),
    [
        pytest.param(
            "qemu-m7",
            "codegen",
            signal.SIGKILL,
            marks=pytest.mark.fault(
                area="build",
                kind="fault",
                what="firmware build SIGKILLed during codegen, after the new model_data.bin and model_config.h were "
                "written and before the other generated files: scons -q then says out of date and a rebuild equals "
                "a clean build bit for bit (.elf, .bin, .hex, reports)",
                sees=r"GEN ",
            ),
        ),
        pytest.param(
            "qemu-m7",
            "link",
            signal.SIGKILL,
            marks=[
                pytest.mark.slow,
                pytest.mark.fault(
                    area="build",
                    kind="fault",
                    what="firmware build SIGKILLed during the link, leaving half a firmware.elf: the rebuild relinks "
                    "it and equals a clean build bit for bit",
                    sees=r"LINK .*firmware\.elf",
                ),
            ],
        ),
        pytest.param(
            "host",
            "link",
            signal.SIGKILL,
            marks=[
                pytest.mark.slow,
                pytest.mark.fault(
                    area="build",
                    kind="fault",
                    what="host build SIGKILLed during the link, leaving half a program: the rebuild relinks it and "
                    "equals a clean build bit for bit",
                    sees=r"LINK .*llmcu",
                ),
            ],
        ),
        pytest.param(
            "host",
            "codegen",
            signal.SIGKILL,
            marks=[
                pytest.mark.slow,
                pytest.mark.fault(
                    area="build",
                    kind="fault",
                    what="host build SIGKILLed during codegen (generated directory half new, half old): the rebuild "
                    "regenerates and equals a clean build bit for bit",
                    sees=r"GEN ",
                ),
            ],
        ),
        pytest.param(
            "qemu-m7",
            "codegen",
            signal.SIGINT,
            marks=[
                pytest.mark.slow,
                pytest.mark.fault(
                    area="build",
                    kind="fault",
                    what="Ctrl-C (SIGINT) to the whole build during codegen: the generation finishes its files, scons "
                    "stops before compiling and saves its records; the rebuild equals a clean build",
                    sees=r"[Ii]nterrupt",
                ),
            ],
        ),
    ],
)
def test_interrupted_build_rebuilds_to_the_clean_result(
    target: str,
    point: str,
    how: signal.Signals,
    tmp_path: Path,
    snapshot: Path,
    models: dict[str, Path],
    reference: dict[str, Path],
    sees,
) -> None:
    wrappers = compiler_wrappers(tmp_path / "bin")
    path = {"PATH": f"{wrappers}{os.pathsep}{os.environ['PATH']}"}
    folder = shutil.copytree(models["b"], tmp_path / "models")  # one path: only the checkpoint's bytes change
    build_dir = f"interrupted-{tmp_path.name}"
    args = build_args(target, build_dir)
    out = out_dir(snapshot, build_dir, target)
    program = out / ("firmware.elf" if target == "qemu-m7" else "llmcu")
    # A complete build of the other model first, so that the interrupted build replaces files that exist and
    # that SCons' records describe: the dangerous case, not a first build with nothing to trust.
    scons(args, folder, cwd=snapshot, env=path)
    old_program = program.read_bytes()
    assert differing(out, reference[target], target), "the two models must build differently"
    shutil.copy(models["a"] / "stories260K.bin", folder / "stories260K.bin")
    marker = tmp_path / "stalled"
    if point == "codegen":
        script = tmp_path / "stall.py"
        script.write_text(STALL_CODEGEN)
        # SCons lets a running Python action finish after Ctrl-C (its handler only stops further work), so
        # under SIGINT the generation resumes after a pause; under SIGKILL nothing resumes.
        pause = "3600" if how == signal.SIGKILL else "2"
        command = [sys.executable, str(script), str(snapshot), str(marker), "model_config.h", pause, "-Q", *args]
    else:
        (wrappers / "stall-link").touch()
        marker = wrappers / "stalled"
        command = [sys.executable, "-m", "SCons", "-Q", *args]
    output = interrupted(command, snapshot, folder, marker, how, wrappers)
    (wrappers / "stall-link").unlink(missing_ok=True)
    if point == "codegen":  # really half done: the new weights next to the old program
        assert (out / "gen/model_data.bin").read_bytes() == (reference[target] / "gen/model_data.bin").read_bytes()
        assert program.read_bytes() == old_program
    else:  # really half written
        assert 0 < program.stat().st_size < (reference[target] / program.name).stat().st_size
    sees(output)
    assert not up_to_date(snapshot, args, folder, wrappers), "a half-finished build was trusted"
    scons(args, folder, cwd=snapshot, env=path)
    assert differing(out, reference[target], target) == []
    assert up_to_date(snapshot, args, folder, wrappers)
    assert not list(out.rglob("*.tmp")), "a temporary file of the atomic writer was left behind"


# A compiler wrapper that stamps every output with one fixed mtime: a rebuild then makes objects whose
# whole-second timestamps equal the recorded ones, as a fast machine rebuilding within a second does. (A recent
# instant: SCons trusts recorded signatures of files older than its max_drift, two days, by design.)
PINNED_MTIME = """#!/bin/sh
out=; prev=
for arg in "$@"; do [ "$prev" = "-o" ] && out=$arg; prev=$arg; done
"{real}" "$@" || exit $?
[ -n "$out" ] && touch -d @{mtime} "$out"
exit 0
"""


def test_rebuilt_object_with_the_same_timestamp_still_relinks(
    tmp_path: Path, snapshot: Path, models: dict[str, Path], reference: dict[str, Path]
) -> None:
    """The model's data object rebuilt with new bytes but the same mtime as before (SCons keeps whole
    seconds): the firmware is relinked. A timestamp-trusting decider kept the old firmware.elf here (seen in
    CI as a flaky interrupted-build test)."""
    mtime = int(time.time())
    wrappers = compiler_wrappers(tmp_path / "bin", PINNED_MTIME, mtime=mtime)
    folder = shutil.copytree(models["b"], tmp_path / "models")
    args = build_args("qemu-m7", f"pinned-{tmp_path.name}")
    out = out_dir(snapshot, f"pinned-{tmp_path.name}", "qemu-m7")
    env = {"PATH": f"{wrappers}{os.pathsep}{os.environ['PATH']}"}
    scons(args, folder, cwd=snapshot, env=env)
    assert (out / "obj/gen/model_data.o").stat().st_mtime == mtime
    shutil.copy(models["a"] / "stories260K.bin", folder / "stories260K.bin")
    scons(args, folder, cwd=snapshot, env=env)
    assert (out / "firmware.elf").read_bytes() == (reference["qemu-m7"] / "firmware.elf").read_bytes()


# ------------------------------------------------------------------------------ reproducible and parallel


def test_reproducible_in_another_directory_and_later(
    tmp_path: Path, snapshot: Path, models: dict[str, Path], reference: dict[str, Path]
) -> None:
    """Same inputs, a copy of the tree at another absolute path (of another length), built later: every output
    is bit-identical, the ELF and the host program included (no absolute paths, no timestamps baked in)."""
    tree = copy_tree(snapshot, tmp_path / "somewhere" / "else" / "entirely")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda target: scons([f"target={target}", *Q8], models["a"], cwd=tree), COMPARED))
    for target in COMPARED:
        assert differing(out_dir(tree, "build", target), reference[target], target) == [], target
    for program in (out_dir(tree, "build", "host") / "llmcu", out_dir(tree, "build", "qemu-m7") / "firmware.elf"):
        assert str(tree).encode() not in program.read_bytes()


def test_parallel_builds_do_not_interfere(snapshot: Path, models: dict[str, Path], reference: dict[str, Path]) -> None:
    """Two scons processes at once from one source tree, different targets and build directories, each with
    -j2: both succeed and equal the serial -j1 builds."""
    runs = [("host", "parallel-1"), ("qemu-m7", "parallel-2")]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "SCons", "-Q", "-j2", *build_args(target, build_dir)],
            cwd=snapshot,
            env=scons_env(models["a"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for target, build_dir in runs
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for (target, build_dir), process, output in zip(runs, processes, outputs, strict=True):
        assert process.returncode == 0, output
        assert differing(out_dir(snapshot, build_dir, target), reference[target], target) == [], (target, build_dir)


@pytest.mark.slow
@pytest.mark.fault(
    area="build",
    kind="fault",
    what="two scons processes building the same build directory at the same moment: the second waits for the "
    "first (a lock per build directory), then finds everything up to date",
    sees=r"another scons is building .*; waiting for it to finish",
)
def test_same_build_dir_twice_at_once_waits(
    snapshot: Path, models: dict[str, Path], reference: dict[str, Path], sees
) -> None:
    args = ["-j2", *build_args("qemu-m7", "same-dir")]
    first = subprocess.Popen(
        [sys.executable, "-m", "SCons", "-Q", *args],
        cwd=snapshot,
        env=scons_env(models["a"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lock = out_dir(snapshot, "same-dir", "qemu-m7") / ".lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = scons(args, models["a"], cwd=snapshot)
    assert first.communicate(timeout=600)[0] and first.returncode == 0
    sees(second.stderr)
    assert "LINK" not in second.stdout  # it found the first one's work done
    assert differing(out_dir(snapshot, "same-dir", "qemu-m7"), reference["qemu-m7"], "qemu-m7") == []


# ----------------------------------------------------------------------------------------- exact rebuilds

EXPLAIN = re.compile(r"^scons: (?:re)?building `([^']+)' because", re.MULTILINE)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, snapshot: Path, models: dict[str, Path]) -> Path:
    """A tree of its own that tests may edit, with its own model directory (own_models) and one qemu-m7 build
    (build_dir=xr). A test that changes a file puts it back; the next test's `settle` rebuilds."""
    tree = copy_tree(snapshot, tmp_path_factory.mktemp("work") / "tree")
    shutil.copytree(models["a"], own_models(tree))
    scons(build_args("qemu-m7", "xr"), own_models(tree), cwd=tree)
    return tree


def own_models(tree: Path) -> Path:
    """The model directory of a `work` tree (beside it, so that it is not part of the tree)."""
    return tree.parent / "models"


def rebuilt(tree: Path, models_dir: Path, *extra: str, dry: bool = False) -> set[str]:
    """Build with --debug=explain; the targets SCons (re)built, relative to the build's output directory
    (anything outside it: relative to the tree)."""
    args = ["--debug=explain", *(["-n"] if dry else []), *build_args("qemu-m7", "xr"), *extra]
    result = scons(args, models_dir, cwd=tree)
    out = out_dir(tree, "xr", "qemu-m7")
    names = set()
    for name in EXPLAIN.findall(result.stdout):
        path = Path(name) if Path(name).is_absolute() else tree / name
        names.add(str(path.relative_to(out) if path.is_relative_to(out) else path.relative_to(tree)))
    return names


def settle(tree: Path, models_dir: Path) -> None:
    scons(build_args("qemu-m7", "xr"), models_dir, cwd=tree)
    assert up_to_date(tree, build_args("qemu-m7", "xr"), models_dir)


def test_noop_and_run_only_options_rebuild_nothing(work: Path, models: dict[str, Path]) -> None:
    settle(work, own_models(work))
    args = build_args("qemu-m7", "xr")
    run_only = ["prompt=Once upon a time", "steps=7", "temperature=0", "topp=0.5", "seed=99", "verbose=1"]
    assert up_to_date(work, [*args, *run_only], own_models(work))
    assert rebuilt(work, own_models(work), *run_only) == set()


def test_model_file_touched_rebuilds_nothing_changed_rebuilds_its_dependents(
    work: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    settle(work, own_models(work))
    checkpoint = own_models(work) / "stories260K.bin"
    os.utime(checkpoint, (time.time() + 5, time.time() + 5))  # touched: newer, same bytes
    assert up_to_date(work, build_args("qemu-m7", "xr"), own_models(work))
    checkpoint.write_bytes((models["b"] / "stories260K.bin").read_bytes())  # same size, other weights
    try:
        names = rebuilt(work, own_models(work))
    finally:
        shutil.copy(models["a"] / "stories260K.bin", checkpoint)
    # Codegen, the weights' object, the link and the report; not one runtime or board object.
    assert {GEN_STEP, "obj/gen/model_data.o", "firmware.elf", REPORT_STEP} <= names, names
    assert names <= {GEN_STEP, "obj/gen/model_data.o", "obj/gen/model_weights.o", "firmware.elf", REPORT_STEP}, names


def test_template_change_rebuilds_only_what_uses_its_output(work: Path, models: dict[str, Path]) -> None:
    settle(work, own_models(work))
    template = work / "site_scons/llmcu/builder/templates/model_data.S.j2"
    original = template.read_text()
    template.write_text(original + "/* a comment: the data file changes, its object does not */\n")
    try:
        names = rebuilt(work, own_models(work))
    finally:
        template.write_text(original)
    # model_data.S changed and was assembled again; no runtime or board object was compiled.
    assert {GEN_STEP, "obj/gen/model_data.o"} <= names, names
    assert names <= {GEN_STEP, "obj/gen/model_data.o", "firmware.elf", REPORT_STEP}, names


def test_runtime_source_change_recompiles_that_file_and_relinks(work: Path, models: dict[str, Path]) -> None:
    settle(work, own_models(work))
    source = work / "runtime_c/sampler.c"
    original = source.read_text()
    source.write_text(original + "\nint llmcu_rebuild_probe(void);\nint llmcu_rebuild_probe(void) { return 42; }\n")
    try:
        names = rebuilt(work, own_models(work))
    finally:
        source.write_text(original)
    assert names == {"obj/runtime_c/sampler.o", "firmware.elf", REPORT_STEP}, names


def test_target_file_change_recompiles_every_object(work: Path, models: dict[str, Path]) -> None:
    settle(work, own_models(work))
    toml = work / "targets/qemu-m7/target.toml"
    original = toml.read_text()
    assert original.count('"-fdata-sections"]') == 1
    toml.write_text(original.replace('"-fdata-sections"]', '"-fdata-sections", "-DLLMCU_REBUILD_PROBE=1"]'))
    try:
        names = rebuilt(work, own_models(work))
    finally:
        toml.write_text(original)
    out = out_dir(work, "xr", "qemu-m7")
    compiled = {str(path.relative_to(out)) for path in (out / "obj").rglob("*.o")} - {"obj/gen/model_data.o"}
    objects = {name for name in names if name.startswith("obj/")}
    # every C object (C flags changed); the assembled data object may follow the regenerated model_data.S (seen
    # once in a CI run, not reproduced), so it is allowed but not required
    assert compiled <= objects <= compiled | {"obj/gen/model_data.o"}
    assert GEN_STEP in names  # the memory map is in target.toml, so the linker script is regenerated


@pytest.mark.parametrize(
    "option", ["quant=q4", "kv_type=f16", *(pytest.param(o, marks=pytest.mark.slow)
                                             for o in ("seq_len=64", "kernels=ref", "group_size=64"))]
)  # fmt: skip
def test_a_build_option_builds_its_own_variant_and_leaves_the_other(
    option: str, work: Path, models: dict[str, Path]
) -> None:
    settle(work, own_models(work))
    base = out_dir(work, "xr", "qemu-m7")
    would = rebuilt(work, own_models(work), option, dry=True)
    # Everything it would build is in a new directory beside the base build, nothing in the base build.
    assert would and all(name.startswith("xr/qemu-m7/") for name in would), would
    assert base.name == "260k-q8" and not [name for name in would if name.startswith("xr/qemu-m7/260k-q8/")]
    assert up_to_date(work, build_args("qemu-m7", "xr"), own_models(work))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "firmware.bin",
            marks=pytest.mark.fault(
                area="build",
                kind="fault",
                what="firmware.bin deleted after a build (it was not a declared output, so scons did not notice)",
                sees=r"REPORT ",
            ),
        ),
        pytest.param(
            "gen/model_data.bin",
            marks=[
                pytest.mark.slow,
                pytest.mark.fault(
                    area="build",
                    kind="fault",
                    what="the generated weights (gen/model_data.bin) deleted after a build",
                    sees=r"GEN ",
                ),
            ],
        ),
    ],
)
def test_a_deleted_output_is_rebuilt(
    name: str, work: Path, models: dict[str, Path], reference: dict[str, Path], sees
) -> None:
    settle(work, own_models(work))
    out = out_dir(work, "xr", "qemu-m7")
    (out / name).unlink()
    assert not up_to_date(work, build_args("qemu-m7", "xr"), own_models(work))
    sees(scons(build_args("qemu-m7", "xr"), own_models(work), cwd=work).stdout)
    assert (out / name).read_bytes() == (reference["qemu-m7"] / name).read_bytes()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(
            b"garbage\n",
            marks=pytest.mark.fault(
                area="build",
                kind="fault",
                what="the build's .sconsign.dblite overwritten with text (SCons alone stops every later build "
                "with a ValueError until it is deleted)",
                sees=r"signature database .* was damaged \(ValueError.*\); moved to \.sconsign\.dblite\.damaged",
            ),
        ),
        pytest.param(
            None,
            marks=[
                pytest.mark.slow,
                pytest.mark.fault(
                    area="build",
                    kind="fault",
                    what="the build's .sconsign.dblite cut in half (a crash while the disk was full)",
                    sees=r"signature database .* was damaged",
                ),
            ],
        ),
    ],
)
def test_damaged_signature_database_rebuilds_everything(
    damage: bytes | None, work: Path, models: dict[str, Path], reference: dict[str, Path], sees
) -> None:
    settle(work, own_models(work))
    out = out_dir(work, "xr", "qemu-m7")
    database = out / ".sconsign.dblite"
    content = database.read_bytes()
    database.write_bytes(damage if damage is not None else content[: len(content) // 2])
    result = scons(build_args("qemu-m7", "xr"), own_models(work), cwd=work)
    sees(result.stderr)
    assert "LINK" in result.stdout  # nothing trusted: rebuilt from no records
    assert differing(out, reference["qemu-m7"], "qemu-m7") == []
    assert up_to_date(work, build_args("qemu-m7", "xr"), own_models(work))


# ------------------------------------------------------------------------------------------ bad inputs


@pytest.mark.fault(
    area="build",
    kind="input",
    what="a generator template missing from the checkout (model_config.h.j2 deleted)",
    sees=r"llmcu: error: template model_config\.h\.j2 not found in .*templates: the llmcu checkout is incomplete",
)
def test_missing_template_is_one_clear_error(work: Path, models: dict[str, Path], sees) -> None:
    template = work / "site_scons/llmcu/builder/templates/model_config.h.j2"
    original = template.read_text()
    template.unlink()
    try:
        result = scons(build_args("qemu-m7", "xr"), own_models(work), cwd=work, check=False)
    finally:
        template.write_text(original)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    sees(result.stderr)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "{% for x in %}\n",
            "syntax",
            marks=pytest.mark.fault(
                area="build",
                kind="input",
                what="a generator template that does not parse (a broken {% for %})",
                sees=r"model_data\.S\.j2:\d+: template syntax error: ",
            ),
        ),
        pytest.param(
            "{{ no_such_value }}\n",
            "undefined",
            marks=pytest.mark.fault(
                area="build",
                kind="input",
                what="a generator template that uses a name the generator does not pass",
                sees=r"model_data\.S\.j2:\d+: template error: 'no_such_value' is undefined",
            ),
        ),
    ],
)
def test_broken_template_is_an_error_and_leaves_no_half_written_file(
    text: str, expected: str, work: Path, models: dict[str, Path], sees
) -> None:
    settle(work, own_models(work))
    out = out_dir(work, "xr", "qemu-m7")
    template = work / "site_scons/llmcu/builder/templates/model_data.S.j2"
    original = template.read_text()
    template.write_text(original + text)
    try:
        result = scons(build_args("qemu-m7", "xr"), own_models(work), cwd=work, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, expected
        sees(result.stderr)
        assert not up_to_date(work, build_args("qemu-m7", "xr"), own_models(work))
    finally:
        template.write_text(original)
    # SCons removes a command's outputs before running it, and the failed generation left no temporary file.
    assert not (out / "gen/model_data.S").exists() and not list(out.rglob("*.tmp"))


def write_target(folder: Path, text: str) -> Path:
    """A targets folder with target `t` (the host's board sources as empty files, so only the TOML is wrong)."""
    for name in ("t/board.c", "posix/main.c", "posix/weights_file.c"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    (folder / "t" / "target.toml").write_text(text)
    return folder


HOST_TOML = (ROOT / "targets/host/target.toml").read_text()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            HOST_TOML.replace('kind = "hosted"', 'kind = "hosted'),
            marks=pytest.mark.fault(
                area="build",
                kind="input",
                what="a target.toml with a TOML syntax error (unterminated string)",
                sees=r"t/target\.toml: not valid TOML: .*line \d+",
            ),
        ),
        pytest.param(
            HOST_TOML.replace("kind = ", "# kind = "),
            marks=pytest.mark.fault(
                area="build",
                kind="input",
                what="a target.toml without its `kind`",
                sees=r"t/target\.toml: missing `kind`",
            ),
        ),
        pytest.param(
            HOST_TOML.replace('kind = "hosted"', 'kind = "rtos"'),
            marks=pytest.mark.fault(
                area="build",
                kind="input",
                what="a target.toml with an unknown kind",
                sees=r"t/target\.toml.*rtos.*hosted",
            ),
        ),
    ],
)
def test_broken_target_file_names_the_file_and_the_problem(text: str, tmp_path: Path, sees) -> None:
    assert text != HOST_TOML
    folder = write_target(tmp_path, text)
    with pytest.raises(OptionError) as info:
        load_target("t", folder)
    sees(str(info.value))


@pytest.mark.fault(
    area="build",
    kind="input",
    what="a target.toml with a syntax error, through scons: one error line, no traceback",
    sees=r"llmcu: error: .*qemu-m7/target\.toml: not valid TOML",
)
def test_broken_target_file_through_scons(work: Path, models: dict[str, Path], sees) -> None:
    toml = work / "targets/qemu-m7/target.toml"
    original = toml.read_text()
    toml.write_text(original.replace("[toolchain]", "[toolchain", 1))
    try:
        result = scons(build_args("qemu-m7", "xr"), own_models(work), cwd=work, check=False)
    finally:
        toml.write_text(original)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    sees(result.stderr)


@pytest.mark.fault(
    area="memory",
    kind="input",
    what="stories260K with an f32 KV cache for the full context on the STM32H743 Nucleo (655,360 bytes, more "
    "than any of its on-chip RAMs holds)",
    sees=r"llmcu: error: the KV cache \(655,360 bytes: kv_type=f32, seq_len=512\) does not fit: .*axi_sram has",
)
def test_model_that_does_not_fit_leaves_no_generated_files(
    tmp_path: Path, snapshot: Path, models: dict[str, Path], sees
) -> None:
    args = [*build_args("stm32h743", f"nofit-{tmp_path.name}"), "kv_type=f32"]
    result = scons(args, models["a"], cwd=snapshot, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    sees(result.stderr)
    gen = snapshot / f"nofit-{tmp_path.name}" / "stm32h743" / "260k-q8" / "gen"
    assert not gen.exists() or not list(gen.iterdir())


@pytest.mark.fault(
    area="options",
    kind="input",
    what="model= a checkpoint path that does not exist",
    sees=r"llmcu: error: .*no_such_model\.bin",
)
def test_missing_model_file_is_one_clear_error(tmp_path: Path, snapshot: Path, models: dict[str, Path], sees) -> None:
    args = ["target=host", f"model={tmp_path / 'no_such_model.bin'}", f"tokenizer={models['a'] / 'tok512.bin'}"]
    result = scons(args, models["a"], cwd=snapshot, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    sees(result.stderr)


# ------------------------------------------------------------------- unwritable and full build directories


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator:
    """Mount small tmpfs file systems (needs root and permission to mount; skipped otherwise)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True, capture_output=True)
        mounted.append(point)
        return point

    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    probe = tmp_path / "probe"  # containers may refuse even root: find out before the test starts
    probe.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)], capture_output=True).returncode:
        pytest.skip("this machine does not let us mount a tmpfs")
    subprocess.run(["umount", str(probe)], check=False)
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.fault(
    area="build",
    kind="input",
    what="build_dir= on a read-only file system (a read-only tmpfs)",
    sees=r"llmcu: error: cannot create the directory .*: Read-only file system \(the file system is read-only: "
    r"choose a writable build_dir=\)",
)
def test_read_only_build_dir_is_one_clear_error(mount_tmpfs, snapshot: Path, models: dict[str, Path], sees) -> None:
    point = mount_tmpfs("ro", "ro,size=64k")
    result = scons(build_args("host", str(point / "b")), models["a"], cwd=snapshot, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    sees(result.stderr)


@pytest.mark.fault(
    area="build",
    kind="input",
    what="build_dir= an existing directory without write permission (chmod 555, as a user who is not root)",
    sees=r"cannot write into the directory .*: Permission denied \(no permission to write there",
)
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: the read-only tmpfs case covers it")
def test_unwritable_existing_build_dir(tmp_path: Path, sees) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        with pytest.raises(fileio.OutputWriteError) as info:
            fileio.write_text_atomic(folder / "out.txt", "x")
        sees(str(info.value))
    finally:
        folder.chmod(0o755)


@pytest.mark.fault(
    area="build",
    kind="fault",
    what="the disk fills up while codegen writes the weights (build_dir= on a 200 KB tmpfs): an error naming "
    "the file, no temporary file left, and the same build succeeds once there is room",
    sees=r"llmcu: error: cannot write .*gen/model_data\.bin: No space left on device \(the file system is full",
)
def test_disk_full_during_codegen(mount_tmpfs, tmp_path: Path, snapshot: Path, models: dict[str, Path], sees) -> None:
    point = mount_tmpfs("full", "size=200k")
    args = build_args("qemu-m7", str(point / "b"))
    result = scons(args, models["a"], cwd=snapshot, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    sees(result.stderr)
    gen = point / "b" / "qemu-m7" / "260k-q8" / "gen"
    assert not [path.name for path in gen.iterdir() if path.name.endswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=16m", str(point)], check=True)
    scons(args, models["a"], cwd=snapshot)
    assert (gen.parent / "firmware.bin").is_file()


@pytest.mark.fault(
    area="build",
    kind="fault",
    what="ENOSPC when the data reaches the disk (simulated at fsync, where delayed allocation reports it, for "
    "machines where a small tmpfs cannot be mounted): the old file stays whole, the temporary file is removed",
    sees=r"cannot write .*model_data\.bin: No space left on device \(the file system is full: free some space",
)
def test_atomic_writer_on_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sees) -> None:
    target = tmp_path / "gen" / "model_data.bin"
    fileio.write_bytes_atomic(target, b"old weights")

    def full(fd: int) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(fileio.OutputWriteError) as info:
        fileio.write_bytes_atomic(target, b"new weights " * 10000)
    monkeypatch.undo()
    sees(str(info.value))
    assert isinstance(info.value, LlmcuError) and isinstance(info.value, OSError) and info.value.errno == 28
    assert target.read_bytes() == b"old weights"
    assert sorted(path.name for path in target.parent.iterdir()) == ["model_data.bin"]


def test_template_errors_are_llmcu_errors() -> None:
    """In-process: the template environment itself raises TemplateError (an LlmcuError), so every caller of a
    template (codegen, boards, linker scripts) reports it without a traceback."""
    with pytest.raises(templating.TemplateError, match="not found"):
        templating.environment().get_template("no_such_template.j2")


@pytest.mark.fault(
    area="build",
    kind="fault",
    what="a weights file (model.bin) cut short after the build, and a generated source edited by hand",
    sees=r"^llmcu: model\.bin is 1,000 bytes, not the [\d,]+ generated: generating the model's files again$",
)
def test_a_damaged_generated_file_is_generated_again(tmp_path: Path, stories260k: Path, sees) -> None:
    """SCons trusts a target whose sources did not change; the manifest (llmcu.builder.outputs) does not."""
    args = [f"model={stories260k}", "tokenizer=" + str(stories260k.parent / "tok512.bin"), "weights_file=yes",
            f"build_dir={tmp_path}"]  # fmt: skip
    scons(args, stories260k.parent)
    (out,) = (tmp_path / "host").iterdir()
    weights, source = out / "model.bin", out / "gen" / "model_weights.c"
    good_weights, good_source = weights.read_bytes(), source.read_bytes()
    with weights.open("r+b") as handle:
        handle.truncate(1000)
    result = scons(args, stories260k.parent)
    (line,) = [text for text in result.stderr.splitlines() if "generating the model's files again" in text]
    sees(line)
    assert weights.read_bytes() == good_weights
    source.write_bytes(good_source.replace(b"llmcu", b"llmcX", 1))  # the same size, another mtime and hash
    result = scons(args, stories260k.parent)
    assert "model_weights.c was changed since it was generated" in result.stderr
    assert source.read_bytes() == good_source
    assert "generating" not in scons(args, stories260k.parent).stderr  # unchanged: nothing generated again
