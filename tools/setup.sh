#!/usr/bin/env bash
# Installs what llmcu needs on a Debian/Ubuntu machine: the C toolchains and the Python packages.
# Safe to run again: it installs only what is missing. Needs root or sudo for apt.
#
#   tools/setup.sh                  the toolchains and requirements.txt, in this Python
#   tools/setup.sh --labgrid-env    also .venv-labgrid/: a separate environment with labgrid (requirements-labgrid.txt)
#                                   for the farm tests against a real coordinator (see docs/hil.md, "Boards in a labgrid
#                                   farm"). labgrid replaces pyserial with its fork and registers a pytest plugin, so
#                                   it never goes into the main environment; the venv sees the main one's packages
#                                   (--system-site-packages) and shadows only what labgrid brings.
set -euo pipefail
cd "$(dirname "$0")/.."

labgrid_env=""
for argument in "$@"; do
    case "$argument" in
    --labgrid-env) labgrid_env=".venv-labgrid" ;;
    --labgrid-env=*) labgrid_env="${argument#--labgrid-env=}" ;;
    *)
        echo "llmcu setup: unknown argument $argument (known: --labgrid-env[=DIR])" >&2
        exit 2
        ;;
    esac
done

# gcc: the host build (its libasan/libubsan/libtsan, which sanitize= and tools/fuzz/c need, come with it through
# libgcc-12-dev); arm-none-eabi-gcc + newlib: the Cortex-M7 firmware; qemu-system-arm: its QEMU twin.
APT_PACKAGES=(gcc libc6-dev gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi qemu-system-arm)
# A C++ application on llmcu.h (tests/runtime/test_step_api.py), and the products that build an export with CMake
# or make (tests/builder/test_export.py).
APT_PACKAGES+=(g++ cmake make pkg-config)
# RZ/V2L (Linux, aarch64): the cross compiler and its static C library, qemu-user to run the program here, the
# OpenSSH client to deploy to a board, and the OpenSSH server the deploy test runs on localhost (not started).
APT_PACKAGES+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user openssh-client openssh-server)
# The peer benchmark (tools/bench.py --peer): llama.cpp built from source with CMake for the host and, with the
# aarch64 C++ cross compiler, for the RZ/V2L (cmake and g++ are above).
APT_PACKAGES+=(g++-aarch64-linux-gnu)
# `scons debug`: gdb for the Arm firmware (and the host program).
APT_PACKAGES+=(gdb-multiarch)
# Headless Chromium: the test that opens a run report as a person would and checks its plots are drawn.
APT_PACKAGES+=(chromium)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "llmcu setup: apt-get install ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check -r requirements.txt
# llmcu itself, editable: the tools, `python -m llmcu.cli.*` and the llmcu-* commands import this checkout's
# site_scons/llmcu (SCons finds it there on its own).
python3 -m pip install -q --disable-pip-version-check --no-deps -e .
# pyenv installs console scripts (scons) behind shims that must be refreshed.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi

if [ -n "$labgrid_env" ]; then
    if [ ! -x "$labgrid_env/bin/python" ]; then
        echo "llmcu setup: creating $labgrid_env (labgrid, apart from the main environment)"
        python3 -m venv --system-site-packages "$labgrid_env"
    fi
    "$labgrid_env/bin/python" -m pip install -q --disable-pip-version-check -r requirements-labgrid.txt
    echo "llmcu setup: farm tests: $labgrid_env/bin/python -m pytest -q -m farm tests/hil"
fi
echo "llmcu setup: done"
