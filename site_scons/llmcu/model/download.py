"""Downloading a model's file into the cache, and hashing files: a download streams into ``<file>.part``, resumes an
interrupted one with an HTTP Range request, and is renamed into place only once its size and sha256 are right."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from .. import __version__
from ..core.errors import DownloadError
from ..core.fileio import locked_directory, write_text_atomic
from .presets import RemoteFile

ENV_CACHE = "LLMCU_CACHE"
DEFAULT_TIMEOUT = 30.0
DEFAULT_ATTEMPTS = 3
CHUNK_SIZE = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class TransferError(Exception):
    """A download did not complete (network trouble, not a checksum): retryable if it made progress."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's content, as lowercase hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def cached_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`sha256_file`, remembered in a ``<file>.sha256`` stamp keyed by the file's size and mtime."""
    target = Path(path)
    sha = _stamped_sha256(target)
    if sha is None:
        sha = sha256_file(target)
        _write_stamp(target, sha)
    return sha


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamped_sha256(path: Path) -> str | None:
    try:
        sha, size, mtime_ns = _stamp_path(path).read_text(encoding="ascii").split()
        stat = path.stat()
        fresh = int(size) == stat.st_size and int(mtime_ns) == stat.st_mtime_ns
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return sha if fresh and _SHA256_RE.fullmatch(sha) else None


def _write_stamp(path: Path, sha: str) -> None:
    stat = path.stat()
    with contextlib.suppress(OSError):  # a read-only directory only costs hashing the file again next time
        write_text_atomic(_stamp_path(path), f"{sha} {stat.st_size} {stat.st_mtime_ns}\n")


def download_file(
    remote: RemoteFile,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Path:
    """Download ``remote`` into ``cache_dir`` and verify it; :class:`DownloadError` if that fails.

    Streams into ``<file>.part`` and resumes one left by an interrupted download; a failed attempt that
    made progress is retried, up to ``attempts`` in all. Only a verified file gets the final name.
    """
    cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser().absolute()
    try:
        return fetch_into_cache(remote, cache, progress, timeout, attempts)
    except TransferError as err:
        raise DownloadError(str(err)) from err


def fetch_into_cache(remote: RemoteFile, cache: Path, progress: bool, timeout: float = DEFAULT_TIMEOUT,
                     attempts: int = DEFAULT_ATTEMPTS) -> Path:  # fmt: skip
    """``download_file`` for the model lookup: a transfer that fails is a TransferError (the lookup says where it
    looked), a file that arrives wrong a DownloadError."""
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / remote.filename
    part = final.with_name(final.name + ".part")

    def waiting() -> None:
        warn(f"another llmcu process is downloading into {cache}; waiting for it to finish")

    # One download into the cache at a time: two builds fetching the same model would append to one .part.
    with locked_directory(cache, on_wait=waiting):
        if final.is_file() and cache_problem(final, remote) is None:
            return final  # the process we waited for fetched it
        sha = _fetch_with_retries(remote, part, progress, timeout, attempts)
        _verify_download(part, remote, sha)
        os.replace(part, final)
        _write_stamp(final, sha)
    return final


def _fetch_with_retries(remote: RemoteFile, part: Path, progress: bool, timeout: float, attempts: int) -> str:
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            return _fetch(remote, part, progress, timeout)
        except TransferError as err:
            if not err.retryable or attempt >= attempts:
                kept = f" The partial download is kept in {part}; the next try resumes it." if part.exists() else ""
                raise TransferError(f"{err}.{kept}", retryable=err.retryable) from err
            warn(f"{err}; retrying ({attempt + 1} of {attempts}).")
    raise AssertionError("unreachable")


def _fetch(remote: RemoteFile, part: Path, progress: bool, timeout: float) -> str:
    """Stream ``remote`` into ``part`` (appending if the server honours the Range request); its sha256."""
    offset = _resumable_offset(part, remote)
    with _open(remote.url, offset, timeout, part) as response:
        offset = _agreed_offset(response, offset, part)
        digest = _hash_prefix(part, offset)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else remote.size
        bar = _progress_bar(remote, total, offset, progress)
        received = _stream(response, part, offset, digest, bar)
    if total is not None and received < total:
        raise TransferError(
            f"the download of {remote.url} stopped after {received} of {total} bytes",
            retryable=received > offset,
        )
    return digest.hexdigest()


def _resumable_offset(part: Path, remote: RemoteFile) -> int:
    size = part.stat().st_size if part.is_file() else 0
    if size and (remote.size is None or size < remote.size):
        return size
    part.unlink(missing_ok=True)
    return 0


def _open(url: str, offset: int, timeout: float, part: Path) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"llmcu/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # the partial file does not fit what the server has: start again
            part.unlink(missing_ok=True)
            raise TransferError(f"{url} refused to resume the download (HTTP 416)", retryable=True) from err
        raise TransferError(f"{url} answered HTTP {err.code} {err.reason}", retryable=False) from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise TransferError(f"cannot reach {url} ({reason})", retryable=False) from err


def _agreed_offset(response: http.client.HTTPResponse, offset: int, part: Path) -> int:
    """The offset the server resumes at: ours on a matching 206, else 0 (a full response: start again)."""
    if offset and response.status == 206:
        if response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            return offset
        part.unlink(missing_ok=True)
        raise TransferError(f"{response.geturl()} resumed at the wrong place", retryable=True)
    return 0


def _hash_prefix(part: Path, offset: int) -> _Digest:
    digest = hashlib.sha256()
    if offset:
        with part.open("rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                digest.update(chunk)
    return digest


def _progress_bar(remote: RemoteFile, total: int | None, offset: int, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading {remote.filename}",
        disable=not (progress and sys.stderr.isatty()),
    )


def _stream(response: http.client.HTTPResponse, part: Path, offset: int, digest: _Digest, bar: tqdm) -> int:
    received = offset
    with part.open("ab" if offset else "wb") as out, bar:
        try:
            # read1: what has arrived, up to a chunk. read() would wait for a whole chunk, and a connection that
            # stalls or drops inside it would lose the bytes it had already received (up to a megabyte per try)
            while chunk := response.read1(CHUNK_SIZE):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise TransferError(
                f"the download of {response.geturl()} broke off after {received} bytes ({err})",
                retryable=received > offset,
            ) from err
        finally:
            out.flush()
            os.fsync(out.fileno())
    return received


def _verify_download(part: Path, remote: RemoteFile, sha: str) -> None:
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise DownloadError(
            f"{remote.url} sent {size} bytes, expected {remote.size}; the download was deleted. If the file "
            "on the server has changed, update the preset (or download it yourself and set LLMCU_MODELS)."
        )
    if remote.sha256 is None:
        warn(f"{remote.filename} cannot be verified: its preset records no sha256 (the download has {sha}).")
    elif sha != remote.sha256:
        part.unlink()
        raise DownloadError(
            f"{remote.url} does not have the expected content: sha256 {sha}, expected {remote.sha256}; "
            "the download was deleted. If the file on the server has changed, update the preset "
            f"(or download it yourself and set LLMCU_MODELS)."
        )


def default_cache_dir() -> Path:
    """``LLMCU_CACHE``, else ``$XDG_CACHE_HOME/llmcu``, else ``~/.cache/llmcu``."""
    override = os.environ.get(ENV_CACHE, "").strip()
    if override:
        return Path(override).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "llmcu"


def warn(message: str) -> None:
    print(f"llmcu: warning: {message}", file=sys.stderr)


def cache_problem(path: Path, remote: RemoteFile) -> str | None:
    """Why the cached file ``path`` is not ``remote`` (size first, then the stamped or computed sha256), or None."""
    return size_problem(path, remote) or _hash_problem(path, remote)


def size_problem(path: Path, remote: RemoteFile) -> str | None:
    actual = path.stat().st_size
    if remote.size is None or actual == remote.size:
        return None
    return f"{path} has {actual} bytes, expected {remote.size}"


def _hash_problem(path: Path, remote: RemoteFile) -> str | None:
    if remote.sha256 is None:
        return None
    actual = cached_sha256(path)
    return None if actual == remote.sha256 else f"{path} has sha256 {actual}, expected {remote.sha256}"
