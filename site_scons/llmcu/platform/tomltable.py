"""Reading a TOML table with exact error messages: every key must be used (a misspelt key is an error, not a
default), and every value is checked for its type and range with the file and table it came from."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from ..core.errors import OptionError
from ..core.fileio import read_toml


class TomlTable:
    """A TOML table being read: every key must be used, so a misspelt key is an error, not a default."""

    def __init__(self, data: object, file: str, path: tuple[str, ...] = ()) -> None:
        self.file = file
        self.path = path
        self.where = f"{file} [{'.'.join(path)}]" if path else file
        if not isinstance(data, dict):
            raise OptionError(f"{self.where}: must be a table")
        self.data = data
        self.used: set[str] = set()

    def raw(self, key: str, default: object) -> object:
        """The value as TOML gave it (``REQUIRED``: an error when it is missing)."""
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            raise OptionError(f"{self.where}: missing `{key}`")
        return default

    def integer(self, key: str, default: object = None, *, lo: int | None = None, hi: int | None = None) -> int:
        value = self.raw(key, REQUIRED if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{self.where}: `{key}` must be an integer, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise OptionError(f"{self.where}: `{key}` = {value} is outside {lo}..{hi}")
        return value

    def number(self, key: str) -> Fraction:
        value = self.raw(key, REQUIRED)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise OptionError(f"{self.where}: `{key}` must be a non-negative number, got {value!r}")
        return Fraction(str(value))

    def flag(self, key: str, default: object = None) -> bool:
        value = self.raw(key, REQUIRED if default is None else default)
        if not isinstance(value, bool):
            raise OptionError(f"{self.where}: `{key}` must be true or false, got {value!r}")
        return value

    def text(self, key: str, default: object = None) -> str:
        value = self.raw(key, REQUIRED if default is None else default)
        if not isinstance(value, str):
            raise OptionError(f"{self.where}: `{key}` must be a string, got {value!r}")
        return value

    def size(self, key: str) -> int:
        value = self.raw(key, REQUIRED)
        try:
            return parse_size(value)
        except ValueError as error:
            raise OptionError(f"{self.where}: `{key}`: {error}") from None

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise OptionError(f"{self.where}: `{key}` must be a list of strings")
        return tuple(value)

    def table(self, key: str) -> TomlTable:
        return TomlTable(self.raw(key, REQUIRED), self.file, (*self.path, key))

    def each(self, key: str) -> Iterator[tuple[str, TomlTable]]:
        """Each sub-table of ``[key]`` with its name, in the file's order; each must be read in full (``done``
        after the loop body), as must ``[key]``."""
        tables = self.table(key)
        for name in tables.data:
            entry = tables.table(name)
            yield name, entry
            entry.done()
        tables.done()

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise OptionError(f"{self.where}: unknown key(s) {', '.join(unknown)}")


REQUIRED = object()


def parse_size(value: object) -> int:
    """``"64K"``, ``"2M"`` or an integer number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip().upper().removesuffix("B")
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if scale > 1 else text
        if digits.isdigit() and int(digits) > 0:
            return int(digits) * scale
    raise ValueError(f"{value!r} is not a size (bytes, or a number with K, M or G)")


def load_table(path: Path, what: str) -> TomlTable:
    """A data file (``limits.toml``, ``parts.toml``) as a TomlTable; an error saying what it is when it is missing."""
    if not path.is_file():
        raise OptionError(f"{path}: missing: {what}")
    return TomlTable(read_toml(path), str(path))
