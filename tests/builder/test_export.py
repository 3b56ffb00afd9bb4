"""`scons ... export` (llmcu.builder.export): the model and the runtime as a library, used by projects that are not
llmcu's. A C application of its own (tests/runtime/apps/step_api.c) is built against a host export with CMake
(add_subdirectory, and find_package on the prebuilt library) and with a plain Makefile, from a copy of the export
moved away from this repository; each prints what `run` prints (fp32: llama2.c byte for byte). The library's every
global symbol starts with llmcu_; a folder that is not an export is never overwritten."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.build import ROOT, scons

APP = ROOT / "tests" / "runtime" / "apps" / "step_api.c"
GOLDEN = ROOT.parent / "shared" / "golden" / "stories260K_llama2c_run.json"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("gcc") is None,
                                reason="cmake and gcc are needed (tools/setup.sh installs them)")  # fmt: skip

CMAKE_SUBDIRECTORY = """cmake_minimum_required(VERSION 3.13)
project(product C)
add_subdirectory(llmcu)
add_executable(product step_api.c)
target_link_libraries(product PRIVATE llmcu::llmcu)
"""
CMAKE_FIND_PACKAGE = """cmake_minimum_required(VERSION 3.13)
project(product C)
find_package(llmcu REQUIRED)
add_executable(product step_api.c)
target_link_libraries(product PRIVATE llmcu::llmcu)
"""
MAKEFILE = """include llmcu/llmcu.mk
CFLAGS += -std=c99 -O2 -Wall -Wextra -Werror $(LLMCU_INCLUDES)
product: step_api.c
\t$(CC) $(CFLAGS) step_api.c $(LLMCU_LDLIBS) -o $@
"""


@pytest.fixture(scope="module")
def exports(shared_build_root: Path, stories260k: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Host exports of stories260K in fp32 and q8, copied out of the repository (as a product would vendor them)."""
    out = {}
    for quant in ("fp32", "q8"):
        scons(["target=host", "model=260k", f"quant={quant}", f"build_dir={shared_build_root}", "export"],
              stories260k.parent)  # fmt: skip
        vendored = tmp_path_factory.mktemp(f"vendor-{quant}") / "llmcu"
        shutil.copytree(shared_build_root / "host" / f"260k-{quant}" / "export", vendored)
        out[quant] = vendored
        out[f"{quant}-program"] = shared_build_root / "host" / f"260k-{quant}" / "llmcu"
    return out


def product(export: Path, tmp_path: Path, how: str) -> Path:
    """A product's project beside its vendored export, built with CMake (two ways) or make; returns its program."""
    project = tmp_path / how
    project.mkdir()
    shutil.copytree(export, project / "llmcu")
    shutil.copy(APP, project / "step_api.c")
    if how == "make":
        (project / "Makefile").write_text(MAKEFILE)
        subprocess.run(["make", "-s", "product"], cwd=project, check=True, capture_output=True)
        return project / "product"
    (project / "CMakeLists.txt").write_text(CMAKE_SUBDIRECTORY if how == "add_subdirectory" else CMAKE_FIND_PACKAGE)
    configure = ["cmake", "-S", str(project), "-B", str(project / "build"), "-DCMAKE_BUILD_TYPE=Release"]
    if how == "find_package":
        configure.append(f"-Dllmcu_DIR={project / 'llmcu'}")
    for command in (configure, ["cmake", "--build", str(project / "build")]):
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    return project / "build" / "product"


def pieces(program: Path, prompt: str, steps: int, temperature: float, topp: float, seed: int) -> str:
    result = subprocess.run([str(program), prompt, str(steps), repr(temperature), repr(topp), str(seed)],
                            capture_output=True, check=True, timeout=120)  # fmt: skip
    return result.stdout.decode()


@pytest.mark.parametrize("how", ["add_subdirectory", "find_package", "make"])
def test_fp32_product_prints_llama2c(exports: dict[str, Path], tmp_path: Path, how: str) -> None:
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not found")
    program = product(exports["fp32"], tmp_path, how)
    for case in json.loads(GOLDEN.read_text()):
        out = pieces(program, case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"])
        assert out == case["stdout"], (how, case)


@pytest.mark.parametrize("how", ["add_subdirectory", "make"])
def test_q8_product_prints_what_run_prints(exports: dict[str, Path], tmp_path: Path, how: str) -> None:
    program = product(exports["q8"], tmp_path, how)
    for prompt, temperature, seed in (("Once upon a time", 0.0, 1), ("The dog", 1.0, 7)):
        run = subprocess.run([str(exports["q8-program"]), "-q", "-p", prompt, "-n", "64", "-t", repr(temperature),
                              "-P", "0.9", "-s", str(seed)], capture_output=True, check=True, timeout=120)  # fmt: skip
        assert pieces(program, prompt, 64, temperature, 0.9, seed) == run.stdout.decode()


def test_every_global_symbol_is_prefixed(exports: dict[str, Path]) -> None:
    listing = subprocess.run(["nm", "-g", "--defined-only", str(exports["q8"] / "lib" / "libllmcu.a")],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    names = [line.split()[-1] for line in listing.splitlines() if len(line.split()) == 3]
    assert names and all(name.startswith("llmcu_") for name in names), [n for n in names if not n.startswith("llmcu_")]
    assert {"llmcu_begin", "llmcu_next", "llmcu_forward", "llmcu_platform_write", "llmcu_rmsnorm"} <= set(names)
    assert sorted(p.name for p in (exports["q8"] / "include").iterdir()) == ["llmcu.h", "llmcu_model_config.h"]


def test_the_export_names_its_parts(exports: dict[str, Path]) -> None:
    export = exports["q8"]
    for name in ("CMakeLists.txt", "llmcuConfig.cmake", "llmcu.mk", "library.json", "README.md", "quant_report.md"):
        assert (export / name).is_file(), name
    assert json.loads((export / "library.json").read_text())["build"]["includeDir"] == "include"
    readme = (export / "README.md").read_text()
    assert "llmcu_begin" in readme and "add_subdirectory" in readme and "llmcu_platform_counter" in readme


@pytest.mark.fault(area="build", kind="input", what="export_dir= a folder that is not an earlier export",
                   sees=r"export_dir=.* exists and is not an llmcu export .*: nothing was written")  # fmt: skip
def test_a_folder_that_is_not_an_export_is_refused(shared_build_root: Path, stories260k: Path, tmp_path: Path,
                                                   exports: dict[str, Path], sees) -> None:  # fmt: skip
    mine = tmp_path / "my_firmware"
    mine.mkdir()
    (mine / "main.c").write_text("int main(void) { return 0; }\n")
    result = scons(["target=host", "model=260k", "quant=q8", f"build_dir={shared_build_root}", f"export_dir={mine}",
                    "export"], stories260k.parent, check=False)  # fmt: skip
    assert result.returncode != 0
    sees(result.stderr)
    assert sorted(p.name for p in mine.iterdir()) == ["main.c"]  # untouched


def test_shared_library_through_pkg_config(exports: dict[str, Path], tmp_path: Path) -> None:
    """A program compiled and linked with `pkg-config --cflags --libs llmcu` against lib/libllmcu.so."""
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config not installed")
    env = {**os.environ, "PKG_CONFIG_PATH": str(exports["q8"])}
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "llmcu"], capture_output=True, text=True, env=env,
                           check=True).stdout.split()  # fmt: skip
    program = tmp_path / "shared"
    subprocess.run(["gcc", "-std=c99", "-O2", str(APP), *flags, "-o", str(program)], check=True)
    run_env = {**os.environ, "LD_LIBRARY_PATH": str(exports["q8"] / "lib")}
    linked = subprocess.run(["ldd", str(program)], capture_output=True, text=True, env=run_env).stdout
    assert str(exports["q8"] / "lib" / "libllmcu.so") in linked  # the export's shared library, not a static copy
    out = subprocess.run([str(program), "Once upon a time", "64", "0.0", "0.9", "1"], capture_output=True,
                         env=run_env, check=True, timeout=120).stdout.decode()  # fmt: skip
    run = subprocess.run([str(exports["q8-program"]), "-q", "-p", "Once upon a time", "-n", "64", "-t", "0"],
                         capture_output=True, check=True, timeout=120).stdout.decode()  # fmt: skip
    assert out == run


def test_python_binding_streams_the_pieces(exports: dict[str, Path]) -> None:
    """The export's python/llmcu_model.py over lib/libllmcu.so: the pieces put together are `run`'s text."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(exports['q8'] / 'python')!r})\n"
        "from llmcu_model import Model\n"
        f"model = Model({str(exports['q8'])!r})\n"
        "pieces = list(model.generate('Once upon a time', steps=64))\n"
        "assert len(pieces) > 10, pieces\n"
        "sys.stdout.write(''.join(pieces) + '\\n' + model.reason + '\\n')\n"
        "again = ''.join(model.generate('The dog', steps=32, temperature=1.0, seed=7))\n"
        "sys.stdout.write(again + '\\n')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    text, reason, again = out.stdout.rsplit("\n", 3)[:3]
    run = subprocess.run([str(exports["q8-program"]), "-q", "-p", "Once upon a time", "-n", "64", "-t", "0"],
                         capture_output=True, text=True, check=True, timeout=120).stdout  # fmt: skip
    assert text + "\n" == run and reason == "steps"
    sampled = subprocess.run([str(exports["q8-program"]), "-q", "-p", "The dog", "-n", "32", "-t", "1.0", "-P", "0.9",
                              "-s", "7"], capture_output=True, text=True, check=True, timeout=120).stdout  # fmt: skip
    assert again + "\n" == sampled


# ---- a firmware product: its own startup, UART and linker script, on QEMU's Cortex-M7 ----

M7_PRODUCT = ROOT / "tests" / "builder" / "apps" / "m7_product"
QEMU = "qemu-system-arm"
needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which(QEMU) is None,
                               reason="arm-none-eabi-gcc and qemu-system-arm are needed")  # fmt: skip


@pytest.fixture(scope="module")
def m7_export(shared_build_root: Path, stories260k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    scons(["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={shared_build_root}", "export"],
          stories260k.parent)  # fmt: skip
    vendored = tmp_path_factory.mktemp("vendor-m7") / "llmcu"
    shutil.copytree(shared_build_root / "qemu-m7" / "260k-q8" / "export", vendored)
    return vendored


def m7_product(export: Path, tmp_path: Path) -> Path:
    project = tmp_path / "m7_product"
    shutil.copytree(M7_PRODUCT, project)
    shutil.copytree(export, project / "llmcu")
    return project


def qemu_output(elf: Path) -> str:
    result = subprocess.run([QEMU, "-M", "mps2-an500", "-nographic", "-semihosting", "-kernel", str(elf)],
                            capture_output=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def host_stories(program: Path) -> str:
    greedy = ["-q", "-p", "Once upon a time", "-n", "64", "-t", "0"]
    sampled = ["-q", "-p", "The dog", "-n", "64", "-t", "1.0", "-P", "0.9", "-s", "7"]
    return "".join(subprocess.run([str(program), *args], capture_output=True, text=True, check=True,
                                  timeout=120).stdout for args in (greedy, sampled))  # fmt: skip


@needs_arm
@pytest.mark.parametrize("how", ["cmake", "make"])
def test_m7_product_runs_the_model_on_qemu(m7_export: Path, exports: dict[str, Path], tmp_path: Path,
                                          how: str) -> None:  # fmt: skip
    """The product's firmware (tests/builder/apps/m7_product: its own startup, CMSDK UART and linker script, which
    INCLUDEs llmcu_sections.ld) built with CMake and an arm-none-eabi toolchain file, and with make, on the twin's
    machine: its two stories are the host program's, token for token (q8 is bit-identical across the kernels)."""
    project = m7_product(m7_export, tmp_path)
    if how == "make":
        subprocess.run(["make", "-s", "app.elf"], cwd=project, check=True, capture_output=True)
        elf = project / "app.elf"
    else:
        for command in (["cmake", "-S", str(project), "-B", str(project / "build"), "-DCMAKE_BUILD_TYPE=Release",
                         f"-DCMAKE_TOOLCHAIN_FILE={project / 'arm-none-eabi.cmake'}"],
                        ["cmake", "--build", str(project / "build")]):  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True)
            assert result.returncode == 0, result.stdout + result.stderr
        elf = project / "build" / "app.elf"
    assert qemu_output(elf) == host_stories(exports["q8-program"])


@needs_arm
@pytest.mark.slow  # two more firmware builds and exports
@pytest.mark.parametrize(("quant", "options"), [("fp32", []), ("q8", ["weights=sdram"])], ids=["fp32", "q8-sdram"])
def test_m7_product_fp32_and_weights_copied_to_sdram(shared_build_root: Path, stories260k: Path,
                                                     exports: dict[str, Path], tmp_path: Path, quant: str,
                                                     options: list[str]) -> None:  # fmt: skip
    """fp32 (the host's fp32 text), and a plan whose weights are copied from the board's flash to its SDRAM at boot:
    the product calls llmcu_copy_weights(), which walks llmcu_sections.ld's table, and prints the host's text."""
    scons(["target=qemu-m7", "model=260k", f"quant={quant}", *options, f"build_dir={tmp_path / 'build'}", "export"],
          stories260k.parent)  # fmt: skip
    [export] = (tmp_path / "build" / "qemu-m7").glob("*/export")
    fragment = (export / "llmcu_sections.ld").read_text()
    if options:
        assert "AT> LLMCU_QSPI" in fragment and "LONG(LOADADDR(" in fragment  # copied at boot
    project = m7_product(export, tmp_path)
    subprocess.run(["make", "-s", "app.elf"], cwd=project, check=True, capture_output=True)
    assert qemu_output(project / "app.elf") == host_stories(exports[f"{quant}-program"])


@needs_arm
@pytest.mark.fault(area="build", kind="input", what="a product's linker script without llmcu_sections.ld",
                   sees=r"undefined reference to `llmcu_sections_ld_included'")  # fmt: skip
def test_a_linker_script_without_the_fragment_fails_naming_it(m7_export: Path, tmp_path: Path, sees) -> None:
    project = m7_product(m7_export, tmp_path)
    script = project / "app.ld"
    script.write_text(script.read_text().replace("    INCLUDE llmcu_sections.ld\n", ""))
    result = subprocess.run(["make", "-s", "app.elf"], cwd=project, capture_output=True, text=True)
    assert result.returncode != 0
    sees(result.stderr)


def test_firmware_export_has_its_fragment_and_plan(m7_export: Path) -> None:
    fragment = (m7_export / "llmcu_sections.ld").read_text()
    assert 'REGION_ALIAS("LLMCU_AXI_SRAM"' in fragment and "} > LLMCU_AXI_SRAM" in fragment  # the KV cache's region
    assert "llmcu_sections_ld_included = 1;" in fragment and "ASSERT(SIZEOF(.llmcu_kv) >= 327680" in fragment
    memory = (m7_export / "MEMORY.md").read_text()
    assert "| flash |" in memory and "Stack: the twin's run of 32 passes peaked at " in memory
    assert not (m7_export / "lib" / "libllmcu.so").exists()  # firmware: the static library only


# ---- the RZ/V2L: a product built with CMake and the cross compiler, run under qemu-aarch64 ----

AARCH64_TOOLCHAIN = """set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_ASM_COMPILER aarch64-linux-gnu-gcc)
"""


@pytest.mark.slow  # 70 s: the rzv2l build, its export and a cross-compiled product under qemu-aarch64
@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
                    reason="aarch64-linux-gnu-gcc and qemu-aarch64 are needed")  # fmt: skip
def test_rzv2l_product_with_the_cross_compiler(shared_build_root: Path, stories260k: Path, exports: dict[str, Path],
                                               tmp_path: Path) -> None:  # fmt: skip
    scons(["target=rzv2l", "model=260k", "quant=q8", f"build_dir={shared_build_root}", "export"], stories260k.parent)
    project = tmp_path / "rz_product"
    project.mkdir()
    shutil.copytree(shared_build_root / "rzv2l" / "260k-q8" / "export", project / "llmcu")
    shutil.copy(APP, project / "step_api.c")
    (project / "aarch64.cmake").write_text(AARCH64_TOOLCHAIN)
    (project / "CMakeLists.txt").write_text(CMAKE_SUBDIRECTORY + "target_link_options(product PRIVATE -static)\n")
    for command in (["cmake", "-S", str(project), "-B", str(project / "build"),
                     f"-DCMAKE_TOOLCHAIN_FILE={project / 'aarch64.cmake'}"],
                    ["cmake", "--build", str(project / "build")]):  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    for prompt, temperature, seed in (("Once upon a time", 0.0, 1), ("The dog", 1.0, 7)):
        command = ["qemu-aarch64", "-cpu", "max", str(project / "build" / "product"), prompt, "64", repr(temperature),
                   "0.9", str(seed)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, check=True, timeout=300)
        run = subprocess.run([str(exports["q8-program"]), "-q", "-p", prompt, "-n", "64", "-t", repr(temperature),
                              "-P", "0.9", "-s", str(seed)], capture_output=True, check=True, timeout=120)  # fmt: skip
        assert out.stdout == run.stdout


@pytest.mark.slow  # 60 s: its own weights_file build and export
@pytest.mark.fault(area="deploy", kind="input", what="llmcu_open on a file that is not the export's weights file",
                   sees=r"llmcu: .*CMakeLists\.txt is not an llmcu weights file")  # fmt: skip
def test_weights_file_export_opens_its_model_bin(shared_build_root: Path, stories260k: Path,
                                                 exports: dict[str, Path], tmp_path: Path, sees) -> None:  # fmt: skip
    """weights_file=yes: the weights stay in model.bin beside the export; a product maps it with llmcu_open (the
    program's own checks) and prints run's text; another file is refused with a reason, a code, no crash."""
    scons(["target=host", "model=260k", "quant=q8", "weights_file=yes", f"build_dir={shared_build_root}", "export"],
          stories260k.parent)  # fmt: skip
    export = shared_build_root / "host" / "260k-q8-wfile" / "export"
    assert (export / "model.bin").is_file() and (export / "src" / "llmcu_open.c").is_file()
    project = tmp_path / "product"
    project.mkdir()
    shutil.copytree(export, project / "llmcu")
    shutil.copy(APP, project / "step_api.c")
    (project / "CMakeLists.txt").write_text(CMAKE_SUBDIRECTORY + "target_compile_definitions(product PRIVATE "
                                            "OPEN_WEIGHTS_FILE)\n")  # fmt: skip
    for command in (["cmake", "-S", str(project), "-B", str(project / "build")],
                    ["cmake", "--build", str(project / "build")]):  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    program = project / "build" / "product"
    args = [str(program), "Once upon a time", "64", "0.0", "0.9", "1"]
    env = {**os.environ, "LLMCU_WEIGHTS": str(project / "llmcu" / "model.bin")}
    out = subprocess.run(args, capture_output=True, env=env, check=True, timeout=120).stdout
    run = subprocess.run([str(exports["q8-program"]), "-q", "-p", "Once upon a time", "-n", "64", "-t", "0"],
                         capture_output=True, check=True, timeout=120).stdout  # fmt: skip
    assert out == run
    wrong = subprocess.run(args, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "LLMCU_WEIGHTS": str(project / "CMakeLists.txt")})  # fmt: skip
    assert wrong.returncode == 1 and "error: the weights file cannot be used" in wrong.stderr
    sees(wrong.stderr)
    # the Python binding opens the export's model.bin itself
    script = (f"import sys; sys.path.insert(0, {str(export / 'python')!r}); from llmcu_model import Model; "
              f"print(''.join(Model({str(export)!r}).generate('Once upon a time', steps=64)))")  # fmt: skip
    text = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, timeout=120).stdout
    assert text == run


def test_the_exported_readme_alone_builds_a_product(exports: dict[str, Path], tmp_path: Path) -> None:
    """The integrator's steps as the export's README.md gives them (its CMake block, verbatim, with the export where
    it says to put it) build a product that prints run's text: the README is enough to integrate."""
    readme = (exports["q8"] / "README.md").read_text()
    block = readme.split("```cmake\n", 1)[1].split("```", 1)[0]
    assert "add_subdirectory(third_party/llmcu)" in block and "llmcu::llmcu" in block
    project = tmp_path / "from_readme"
    shutil.copytree(exports["q8"], project / "third_party" / "llmcu")
    shutil.copy(APP, project / "step_api.c")
    lines = [line.split("#", 1)[0].rstrip() for line in block.splitlines()]
    head = "cmake_minimum_required(VERSION 3.13)\nproject(product C)\nadd_executable(product step_api.c)\n"
    (project / "CMakeLists.txt").write_text(head + "\n".join(lines) + "\n")
    for command in (["cmake", "-S", str(project), "-B", str(project / "build")],
                    ["cmake", "--build", str(project / "build")]):  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    out = subprocess.run([str(project / "build" / "product"), "Once upon a time", "64", "0.0", "0.9", "1"],
                         capture_output=True, check=True, timeout=120).stdout  # fmt: skip
    run = subprocess.run([str(exports["q8-program"]), "-q", "-p", "Once upon a time", "-n", "64", "-t", "0"],
                         capture_output=True, check=True, timeout=120).stdout  # fmt: skip
    assert out == run


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_cpp_product_links_the_export(exports: dict[str, Path], tmp_path: Path) -> None:
    """A C++17 program on the export's include/ and lib/libllmcu.a (llmcu.h is extern "C")."""
    program = tmp_path / "cpp_product"
    subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(exports["q8"] / "include"),
                    str(APP.with_name("step_api_cpp.cpp")), str(exports["q8"] / "lib" / "libllmcu.a"), "-lm",
                    "-lpthread", "-o", str(program)], check=True)  # fmt: skip
    out = subprocess.run([str(program), "Once upon a time", "64"], capture_output=True, check=True, timeout=120).stdout
    run = subprocess.run([str(exports["q8-program"]), "-q", "-p", "Once upon a time", "-n", "64", "-t", "0"],
                         capture_output=True, check=True, timeout=120).stdout  # fmt: skip
    assert out == run


def test_readme_states_the_static_state(exports: dict[str, Path]) -> None:
    readme = (exports["q8"] / "README.md").read_text()
    assert "KV cache 327,680 bytes (`.bss.llmcu_kv`)" in readme  # stories260K: 5 layers x 512 x 64 x 2 x int16 (q16)
    assert ("not reentrant" in readme and "Nothing is\n  allocated" in readme) or "Nothing is" in readme
