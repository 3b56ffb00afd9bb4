#!/usr/bin/env bash
# Installs what llmcu needs on a Debian/Ubuntu machine: the C toolchains and the Python packages.
# Safe to run again: it installs only what is missing. Needs root or sudo for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc: the host build (its libasan/libubsan/libtsan, which sanitize= and tools/fuzz/c need, come with it through
# libgcc-12-dev); arm-none-eabi-gcc + newlib: the Cortex-M7 firmware; qemu-system-arm: its QEMU twin.
APT_PACKAGES=(gcc libc6-dev gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi qemu-system-arm)
# RZ/V2L (Linux, aarch64): the cross compiler and its static C library, qemu-user to run the program here, the
# OpenSSH client to deploy to a board, and the OpenSSH server the deploy test runs on localhost (not started).
APT_PACKAGES+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user openssh-client openssh-server)
# `scons debug`: gdb for the Arm firmware (and the host program).
APT_PACKAGES+=(gdb-multiarch)

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
# pyenv installs console scripts (scons) behind shims that must be refreshed.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
echo "llmcu setup: done"
