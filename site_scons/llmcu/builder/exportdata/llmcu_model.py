"""Python binding of an llmcu export's shared library (lib/libllmcu.so), with ctypes: nothing to compile.

    import sys; sys.path.insert(0, "path/to/export/python")
    from llmcu_model import Model

    model = Model("path/to/export")          (a weights_file export's model.bin is opened and checked here)
    for piece in model.generate("Once upon a time", steps=64):
        print(piece, end="", flush=True)

One generation at a time (the library's state is static); a generation not read to its end is cancelled when the
next one begins.
"""

from __future__ import annotations

import codecs
import ctypes
from collections.abc import Iterator
from pathlib import Path

LLMCU_OK, LLMCU_DONE = 0, 1
REASONS = ("none", "steps", "end_of_text", "context_full", "stopped")


class Params(ctypes.Structure):
    """llmcu.h's llmcu_params."""

    _fields_ = [
        ("prompt", ctypes.c_char_p),
        ("steps", ctypes.c_int),
        ("temperature", ctypes.c_float),
        ("topp", ctypes.c_float),
        ("seed", ctypes.c_uint64),
        ("records", ctypes.c_int),
    ]


class GenerationError(RuntimeError):
    """A negative LLMCU_ERR_* code, with llmcu_strerror's text."""


class Model:
    """The model an export was built for, through its lib/libllmcu.so."""

    def __init__(self, export_dir: str | Path) -> None:
        library = Path(export_dir) / "lib" / "libllmcu.so"
        if not library.is_file():
            raise FileNotFoundError(f"{library}: not an export of a hosted or Linux build (no shared library)")
        lib = ctypes.CDLL(str(library))
        lib.llmcu_gen_size.restype = ctypes.c_size_t
        lib.llmcu_begin.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Params)]
        lib.llmcu_next.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
        lib.llmcu_cancel.argtypes = [ctypes.c_void_p]
        lib.llmcu_strerror.restype = ctypes.c_char_p
        lib.llmcu_reason_name.restype = ctypes.c_char_p
        self._lib = lib
        self._gen = ctypes.create_string_buffer(lib.llmcu_gen_size())
        self.reason = "none"  # why the last generation ended
        weights = Path(export_dir) / "model.bin"
        if weights.is_file():  # a weights_file build: its weights are mapped from the file, checked first
            lib.llmcu_open.argtypes = [ctypes.c_char_p]
            self._check(lib.llmcu_open(str(weights).encode()))

    def _check(self, code: int) -> int:
        if code < 0:
            raise GenerationError(self._lib.llmcu_strerror(code).decode())
        return code

    def generate(self, prompt: str = "", *, steps: int = 256, temperature: float = 0.0, topp: float = 0.9,
                 seed: int = 1) -> Iterator[str]:  # fmt: skip
        """The pieces of text as llmcu_next gives them: the prompt's first, then the model's. Bytes that are not yet
        a whole UTF-8 character wait for the piece that completes it."""
        self._lib.llmcu_cancel(self._gen)
        params = Params(None, steps, temperature, topp, seed, 0)
        self._check(self._lib.llmcu_begin(self._gen, prompt.encode(), ctypes.byref(params)))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        piece, length = ctypes.c_char_p(), ctypes.c_size_t()
        while self._check(self._lib.llmcu_next(self._gen, ctypes.byref(piece), ctypes.byref(length))) == LLMCU_OK:
            text = decoder.decode(ctypes.string_at(piece, length.value))
            if text:
                yield text
        self.reason = self._reason()
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest

    def _reason(self) -> str:
        reason = ctypes.c_int.from_buffer(self._gen, 0).value  # llmcu_gen's first field
        return self._lib.llmcu_reason_name(reason).decode()
