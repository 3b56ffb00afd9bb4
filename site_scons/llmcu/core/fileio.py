"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the build writes itself (generated sources, linker scripts, weights, reports, region images, run
logs) goes through :func:`write_bytes_atomic`: a build killed at any moment leaves each output either whole
and old or whole and new, and SCons' signature database, written only when a build finishes, never records a
file the build did not finish. A write that fails (disk full, read-only file system) is an
:class:`OutputWriteError` naming the file and what to do, not a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pickle
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import LlmcuError, OptionError

# What a user can do about the usual reasons a write fails.
_ADVICE = {
    errno.ENOSPC: "the file system is full: free some space or choose another build_dir=",
    errno.EDQUOT: "the disk quota is used up: free some space or choose another build_dir=",
    errno.EROFS: "the file system is read-only: choose a writable build_dir=",
    errno.EACCES: "no permission to write there: choose a writable build_dir=",
    errno.EPERM: "no permission to write there: choose a writable build_dir=",
}


class OutputWriteError(LlmcuError, OSError):
    """An output could not be written or its directory created. It is still an OSError (same errno), so
    callers that tolerate a failed write, such as a cache stamp, keep working."""

    def __init__(self, path: Path, error: OSError, doing: str = "write") -> None:
        reason = error.strerror or str(error)
        advice = _ADVICE.get(error.errno or 0)
        message = f"cannot {doing} {path}: {reason}" + (f" ({advice})" if advice else "")
        super().__init__(message)
        self.errno = error.errno
        self.strerror = reason
        self.filename = str(path)

    def __str__(self) -> str:  # OSError's own __str__ would show "[Errno n] ..." without the advice
        return str(self.args[0])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output directory ``path`` (and its parents) and check it is writable; an OutputWriteError
    otherwise. ``mkdir`` succeeds on an existing read-only directory, hence the explicit check."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputWriteError(folder, error, "create the directory") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_fs(folder) else errno.EACCES
        raise OutputWriteError(folder, OSError(code, os.strerror(code)), "write into the directory")
    return folder


def lock_dir(folder: str | os.PathLike[str], on_wait: Callable[[], None] | None = None) -> IO[bytes]:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) until the returned file is closed or the
    process ends, even by SIGKILL (the kernel drops the lock). Two scons processes building the same build
    directory would otherwise write the same objects and signature database at once; the second waits,
    calling ``on_wait`` first so the user knows why nothing happens."""
    handle = (ensure_dir(folder) / ".lock").open("ab")
    _lock_exclusive(handle.fileno(), on_wait)
    return handle


def _lock_exclusive(fd: int, on_wait: Callable[[], None] | None) -> None:
    """flock(fd, LOCK_EX), calling ``on_wait`` first when another process holds the lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if on_wait is not None:
            on_wait()
        fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def locked_directory(folder: str | os.PathLike[str], on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the directory itself (its own inode: no lock file is left in it) for the
    ``with`` block; released when the block ends or the process dies. ``on_wait`` is called first if another
    process holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _lock_exclusive(fd, on_wait)
        yield
    finally:
        os.close(fd)  # closing the only descriptor drops the lock


def set_aside_damaged_database(path: str | os.PathLike[str]) -> str | None:
    """SCons' signature database ``path`` (a pickled dict) when it cannot be read: renamed to ``<path>.damaged``
    so that the build starts from no records (everything rebuilds, nothing stale is trusted); returns a
    warning for the user, or None when the file is missing or fine. SCons itself ignores only some kinds of
    damage; others (e.g. a file overwritten with text) stop every later build with an unrelated-looking
    ``ValueError`` until the file is deleted by hand."""
    database = Path(path)
    try:
        content = database.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OutputWriteError(database, error, "read") from None
    if not content:
        return None
    try:
        records = pickle.loads(content, encoding="bytes")  # our own build directory's file, as SCons reads it
        if isinstance(records, dict):
            return None
        problem = f"it holds a {type(records).__name__}, not a dict"
    except Exception as error:  # any unpickling failure: truncation, garbage, a foreign file
        problem = f"{type(error).__name__}: {error}"
    damaged = database.with_name(database.name + ".damaged")
    os.replace(database, damaged)
    return f"the build's signature database {database} was damaged ({problem}); moved to {damaged.name}, rebuilding"


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _sync_dir(folder: Path) -> None:
    """Make a rename durable (power loss after a build must not bring back the old file); best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The temporary file has a unique name (``.<name>.<random>.tmp``), so two processes writing the same output
    do not write into each other's file; the last rename wins, whole. On failure the temporary file is
    removed, the old ``path`` is left as it was, and the error is an :class:`OutputWriteError`."""
    target = Path(path)
    ensure_dir(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise OutputWriteError(target, error) from None
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_name, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and not isinstance(error, OutputWriteError):
            raise OutputWriteError(target, error) from None
        raise
    _sync_dir(target.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def read_toml(path: str | os.PathLike[str]) -> dict:
    """A project data file (target, board, model preset); invalid TOML is an OptionError naming the file."""
    source = Path(path)
    try:
        with source.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise OptionError(f"{source}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:  # tomllib decodes the bytes itself and lets this one through
        raise OptionError(f"{source}: not valid TOML: not UTF-8 text (byte {error.start}: {error.reason})") from None
