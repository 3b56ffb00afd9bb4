"""Which part a board carries (``targets/<target>/parts.toml``): its internal flash, the GPIO ports of its package,
the DEV_ID and flash-size word its firmware checks at boot, and the supplies it has; parts the target must not
build for are refused with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import OptionError
from .tomltable import load_table, parse_size

PORTS = "ABCDEFGHIJK"  # GPIOA..GPIOK
SUPPLIES = ("ldo", "smps", "bypass")  # what a board file's `supply` may say (only what the part has is accepted)


@dataclass(frozen=True)
class Package:
    letter: str
    name: str
    ports: str  # the ports bonded out in full
    also: tuple[str, ...]  # single pins of other ports (PH0/PH1 on the small packages)

    def has_pin(self, port: int, number: int) -> bool:
        letter = PORTS[port]
        return letter in self.ports or f"P{letter}{number}" in self.also


@dataclass(frozen=True)
class Part:
    """A part number, checked: ``STM32H750IB`` -> the STM32H750xB with the UFBGA176 package."""

    name: str  # as the board file gave it
    family: str  # "STM32H750xB": the entry in parts.toml
    flash_size: int  # bytes of internal flash
    dev_id: int
    supplies: tuple[str, ...]
    package: Package | None  # None for "STM32H750xB" (any package: pins are not checked)
    source: str

    @property
    def flash_kb(self) -> int:
        return self.flash_size >> 10


def _load(target_folder: Path) -> tuple[dict[str, dict], dict[str, Package], dict[str, str], str]:
    path = Path(target_folder) / "parts.toml"
    table = load_table(path, "the parts this target's boards may carry")
    parts = {}
    for family, entry in table.each("part"):
        try:
            flash = parse_size(entry.raw("flash", None))
        except ValueError as error:
            raise OptionError(f"{entry.where}: `flash`: {error}") from None
        supplies = entry.strings("supplies")
        unknown = [s for s in supplies if s not in SUPPLIES]
        if unknown or not supplies:
            raise OptionError(f"{entry.where}: `supplies` must list some of {', '.join(SUPPLIES)}")
        parts[family] = {"flash": flash, "dev_id": entry.integer("dev_id", lo=0, hi=0xFFF), "supplies": supplies,
                         "source": entry.text("source")}  # fmt: skip
    packages = {letter: Package(letter, entry.text("name"), entry.text("ports"), entry.strings("also"))
                for letter, entry in table.each("package")}  # fmt: skip
    refused = {prefix: " ".join(entry.text("why").split()) for prefix, entry in table.each("refused")}
    table.done()
    return parts, packages, refused, str(path)


def load_part(target_folder: Path, name: str, where: str) -> Part:
    """The part a board file names; an error naming the known parts (or why a part is refused) otherwise."""
    parts, packages, refused, source = _load(target_folder)
    upper = name.upper()
    for prefix, why in refused.items():
        if upper.startswith(prefix):
            raise OptionError(f"{where}: part {name!r} is refused: {why}")
    known = ", ".join(parts)
    # STM32H750IB: family STM32H750, package letter (index 9), flash letter (index 10), then optional suffixes
    # of the ordering code (package type, temperature range: STM32H750IBK6) that do not change the die.
    if len(upper) < 11 or not upper.startswith("STM32"):
        raise OptionError(f"{where}: part {name!r} is not a part number like STM32H743ZI; known: {known}")
    package_letter = upper[9]
    family = f"{upper[:9]}x{upper[10]}"
    if family not in parts:
        raise OptionError(f"{where}: part {name!r} is not one of this target's parts: {known} ({source})")
    package = None
    if name[9] != "x":  # a lower-case x: any package (the pins are not checked against one)
        package = packages.get(package_letter)
        if package is None:
            raise OptionError(f"{where}: part {name!r}: package letter {package_letter!r} is not one of "
                              f"{', '.join(f'{k} ({p.name})' for k, p in packages.items())}")  # fmt: skip
    entry = parts[family]
    return Part(name, family, entry["flash"], entry["dev_id"], tuple(entry["supplies"]), package, entry["source"])
