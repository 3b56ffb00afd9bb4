"""Model presets, finding model files, and downloading them (from a local HTTP server, never the internet)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, find_model_file
from llmcu.core.config import ModelConfig
from llmcu.core.errors import CheckpointError, DownloadError, ModelNotFoundError, OptionError
from llmcu.model import download, models, presets
from llmcu.model.gguf_writer import write_gguf
from llmcu.model.presets import Preset, RemoteFile

MODELS_DIR = ROOT / "models"
SHA_260K = "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"
SHA_TOK512 = "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"
SHA_TOKENIZER = "50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361"


# ------------------------------------------------------------------------------------------------ server


class FileServer(ThreadingHTTPServer):
    """Serves ``root``; can break the next ``breaks`` responses halfway and can ignore Range requests."""

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.root = root
        self.breaks = 0
        self.ranges = True
        self.status = 0  # answer every request with this HTTP error
        self.stall = 0.0  # after half the body, wait this long before the rest (a stalled connection)
        self.gate: threading.Event | None = None  # after half the body, wait until this is set
        self.wrong_range = False  # answer a Range request at another offset than asked
        self.requests: list[tuple[str, str | None]] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        requested_range = self.headers.get("Range")
        self.server.requests.append((self.path, requested_range))
        path = self.server.root / self.path.lstrip("/")
        if self.server.status:
            self.send_error(self.server.status)
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(requested_range.split("=")[1].split("-")[0]) if requested_range else 0
        if requested_range and self.server.ranges:
            start = start // 2 if self.server.wrong_range else start
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            start = 0
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.breaks > 0:
            self.server.breaks -= 1
            body = body[: len(body) // 2]
        if self.server.stall or self.server.gate is not None:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if self.server.gate is not None:
                self.server.gate.wait(timeout=60)
            else:
                time.sleep(self.server.stall)
            body = body[len(body) // 2 :]
        with contextlib.suppress(OSError):  # the client may have given up (a stall)
            self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = FileServer(root)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LLMCU_* settings leak in, the cache is a temporary directory, and nothing goes through a proxy."""
    for name in ("LLMCU_MODELS", "LLMCU_OFFLINE", "XDG_CACHE_HOME", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMCU_CACHE", str(cache))
    return cache


# ----------------------------------------------------------------------------------------------- helpers


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def remote_for(data: bytes, filename: str, url: str) -> RemoteFile:
    return RemoteFile(filename, url, len(data), hashlib.sha256(data).hexdigest())


TINY_SHAPE = ModelConfig(dim=8, hidden_dim=16, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=4, seq_len=4)


def fake_preset(server: FileServer, ckpt: bytes = b"", tok: bytes = b"", name: str = "fake") -> Preset:
    """A preset whose files are served by ``server`` (default content: 300 kB and 5 kB of random bytes)."""
    ckpt = ckpt or blob(300_000, 1)
    tok = tok or blob(5_000, 2)
    (server.root / "fake.bin").write_bytes(ckpt)
    (server.root / "faketok.bin").write_bytes(tok)
    return Preset(
        name=name,
        description="test",
        checkpoint=remote_for(ckpt, "fake.bin", server.url("fake.bin")),
        tokenizer=remote_for(tok, "faketok.bin", server.url("faketok.bin")),
        shape=TINY_SHAPE,
    )


def put(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def read_header(path: Path) -> ModelConfig:
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", path.read_bytes()[:28])
    return ModelConfig(dim, hidden, layers, heads, kv_heads, abs(vocab), seq, vocab > 0)


# ----------------------------------------------------------------------------------------------- presets


def test_presets_parse_smallest_first() -> None:
    found = presets.list_presets(MODELS_DIR)
    assert list(found) == ["260k", "15m", "42m", "110m", "tinyllama-q4_0", "tinyllama-q8_0"]
    shapes = {name: preset.shape for name, preset in found.items()}
    assert shapes["260k"] == ModelConfig(64, 172, 5, 8, 4, 512, 512)
    assert shapes["15m"] == ModelConfig(288, 768, 6, 6, 6, 32000, 256)
    assert shapes["42m"] == ModelConfig(512, 1376, 8, 8, 8, 32000, 1024)
    assert shapes["110m"] == ModelConfig(768, 2048, 12, 12, 12, 32000, 1024)
    assert found["15m"].checkpoint.size == 60816028 and found["15m"].checkpoint.sha256 is None
    assert found["110m"].checkpoint.size is None and found["110m"].checkpoint.sha256 is None
    for name in ("15m", "42m", "110m"):
        assert found[name].tokenizer == RemoteFile(
            "tokenizer.bin",
            "https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.bin",
            433869,
            SHA_TOKENIZER,
        )


def test_gguf_presets_bring_their_vocabulary() -> None:
    """The TinyLlama presets: a pinned GGUF file with its size and sha256, no tokenizer file (the vocabulary is in
    the GGUF), the real model's shape (grouped-query attention, a separate classifier)."""
    found = presets.list_presets(MODELS_DIR)
    tinyllama = ModelConfig(2048, 5632, 22, 32, 4, 32000, 2048, shared_classifier=False)
    for name, size in (("tinyllama-q4_0", 637_699_456), ("tinyllama-q8_0", 1_170_781_568)):
        preset = found[name]
        assert preset.tokenizer is None and preset.shape == tinyllama
        assert preset.checkpoint.size == size and preset.checkpoint.sha256 is not None
        assert preset.checkpoint.filename.endswith(".gguf") and preset.checkpoint.filename in preset.checkpoint.url
        assert "/resolve/52e7645ba7c309695bec7ac98f4f005b139cf465/" in preset.checkpoint.url  # a pinned revision
    assert 1.0e9 < tinyllama.parameter_count() < 1.2e9


def test_a_gguf_preset_downloads_one_file_and_reads_its_vocabulary(
    server: FileServer, clean_env: Path, tmp_path: Path, stories260k: Path, tok512: Path
) -> None:
    pytest.importorskip("gguf")
    from llmcu.model import sources
    from llmcu.model.checkpoint import read_checkpoint
    from llmcu.model.tokenizer import read_tokenizer

    ckpt, tok = read_checkpoint(stories260k), read_tokenizer(tok512)
    data = write_gguf(tmp_path / "made.gguf", ckpt, tok, qtype="Q4_0").read_bytes()
    (server.root / "stories260K.Q4_0.gguf").write_bytes(data)
    text = (
        'name = "g"\n[checkpoint]\nfilename = "stories260K.Q4_0.gguf"\n'
        f'url = "{server.url("stories260K.Q4_0.gguf")}"\nsize = {len(data)}\n'
        f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n[shape]\n'
        "dim = 64\nhidden_dim = 172\nn_layers = 5\nn_heads = 8\nn_kv_heads = 4\nvocab_size = 512\nseq_len = 512\n"
    )
    put(tmp_path / "presets", "g.toml", text.encode())
    resolved = models.resolve_model("g", None, tmp_path / "presets", search_dirs=[], progress=False)
    assert resolved.checkpoint == resolved.tokenizer == clean_env / "stories260K.Q4_0.gguf"
    assert [path for path, _ in server.requests] == ["/stories260K.Q4_0.gguf"]  # one file, nothing else
    model = sources.read_model(resolved.checkpoint)
    resolved.preset.check_shape(model.config, resolved.checkpoint)
    assert sources.read_vocab(resolved.tokenizer, 512) == tok
    own = models.resolve_model("g", str(tok512), tmp_path / "presets", search_dirs=[], progress=False)
    assert own.tokenizer == tok512  # tokenizer= still replaces it


def test_a_build_from_a_gguf_preset(server: FileServer, clean_env: Path, tmp_path: Path, monkeypatch,
                                    stories260k: Path, tok512: Path) -> None:  # fmt: skip
    """model=NAME of a GGUF preset through the build's own configure and generate steps: downloaded, shape-checked,
    its vocabulary from the file, its Q4_0 codes kept by quant=q4."""
    pytest.importorskip("gguf")
    from llmcu.builder import steps
    from llmcu.builder.settings import configure
    from llmcu.model.checkpoint import read_checkpoint
    from llmcu.model.tokenizer import read_tokenizer

    data = write_gguf(tmp_path / "made.gguf", read_checkpoint(stories260k), read_tokenizer(tok512), qtype="Q4_0")
    payload = data.read_bytes()
    (server.root / "s.gguf").write_bytes(payload)
    presets = tmp_path / "presets"
    text = (MODELS_DIR / "tinyllama-q4_0.toml").read_text()
    text = text.replace('name = "tinyllama-q4_0"', 'name = "tiny-gguf"')
    text = text.replace('tinyllama-1.1b-chat-v1.0.Q4_0.gguf"\n', 's.gguf"\n', 1)
    text = "\n".join(
        f'url = "{server.url("s.gguf")}"' if line.startswith("url") else
        f"size = {len(payload)}" if line.startswith("size") else
        f'sha256 = "{hashlib.sha256(payload).hexdigest()}"' if line.startswith("sha256") else line
        for line in text.splitlines()
    )  # fmt: skip
    shape = "dim = 64\nhidden_dim = 172\nn_layers = 5\nn_heads = 8\nn_kv_heads = 4\nvocab_size = 512\nseq_len = 512\n"
    put(presets, "tiny-gguf.toml", (text.split("[shape]")[0] + "[shape]\n" + shape).encode())
    monkeypatch.setattr("llmcu.builder.settings.MODELS_DIR", presets)
    settings = configure({"target": "host", "model": "tiny-gguf", "quant": "q4", "build_dir": str(tmp_path)})
    assert settings.checkpoint == settings.tokenizer == clean_env / "s.gguf"
    steps.generate_sources(settings)
    report = (settings.out_dir / "quant_report.md").read_text()
    assert "31 Q4_0 tensors dequantized to float32; a q4 build at group_size=32 keeps their codes" in report
    wrong = (presets / "tiny-gguf.toml").read_text().replace("n_layers = 5", "n_layers = 6")
    (presets / "tiny-gguf.toml").write_text(wrong)
    with pytest.raises(CheckpointError, match="is not the checkpoint of preset 'tiny-gguf': n_layers is 5"):
        steps.generate_sources(configure({"target": "host", "model": "tiny-gguf", "quant": "q4",
                                                  "build_dir": str(tmp_path / "wrong")}))  # fmt: skip


def test_260k_preset_matches_the_real_files(stories260k: Path, tok512: Path) -> None:
    preset = presets.load_preset("260k", MODELS_DIR)
    assert preset.checkpoint.filename == stories260k.name
    assert preset.checkpoint.size == stories260k.stat().st_size
    assert preset.checkpoint.sha256 == download.sha256_file(stories260k) == SHA_260K
    assert preset.tokenizer.size == tok512.stat().st_size
    assert preset.tokenizer.sha256 == download.sha256_file(tok512) == SHA_TOK512
    preset.check_shape(read_header(stories260k), stories260k)


def test_llama2_tokenizer_matches_its_preset() -> None:
    path = find_model_file("tokenizer.bin")
    if path is None:
        pytest.skip("tokenizer.bin not found (set LLMCU_MODELS)")
    remote = presets.load_preset("15m", MODELS_DIR).tokenizer
    assert (remote.size, remote.sha256) == (path.stat().st_size, download.sha256_file(path))


def test_check_shape_names_every_difference() -> None:
    preset = presets.load_preset("260K", MODELS_DIR)  # names are case-insensitive
    wrong = ModelConfig(32, 172, 5, 8, 4, 512, 256)
    with pytest.raises(CheckpointError) as info:
        preset.check_shape(wrong, "x.bin")
    assert "dim is 32, expected 64" in str(info.value)
    assert "seq_len is 256, expected 512" in str(info.value)
    assert preset.shape_mismatches(preset.shape) == []


@pytest.mark.fault(
    area="options",
    kind="input",
    what="model=stories15M (not a preset name)",
    sees=r"'stories15M'.*model=path/to/model\.bin tokenizer=path/to/tokenizer\.bin",
)
def test_unknown_preset_lists_presets_and_the_path_form(sees) -> None:
    with pytest.raises(OptionError) as info:
        presets.load_preset("stories15M", MODELS_DIR)
    message = str(info.value)
    sees(message)
    assert "'stories15M'" in message
    for name in ("260k", "15m", "42m", "110m", "stories15M.bin"):
        assert name in message
    assert "model=path/to/model.bin tokenizer=path/to/tokenizer.bin" in message


BAD_PRESETS = [
    ('name = "p"\n[checkpoint]\nfilename="a.bin"\nurl="https://x/a"\nsha265="00"\n', "sha265"),
    ('name = "other"\n', "name is 'other' but the file is p.toml"),
    ('name = "p"\n[checkpoint]\nfilename="a.bin"\nurl="https://x/a"\nsha256="abc"\n', "64 hexadecimal"),
    ('name = "p"\n[checkpoint]\nfilename="a.bin"\nurl="ftp://x/a"\n', "http:// or https://"),
    ('name = "p"\n[checkpoint]\nfilename="a.bin"\nurl="https://x/a"\nsize="12"\n', "'size' must be a whole"),
    ('name = "p"\n[checkpoint]\nfilename="a.bin"\nurl="https://x/a"\n', "'tokenizer' is missing"),
    ("name = \n", "not valid TOML"),
]


@pytest.mark.fault(
    area="download",
    kind="input",
    what=(
        "a broken preset file (misspelt key, wrong name, short sha256, ftp:// URL, size as a string, no tokenizer,"
        " bad TOML)"
    ),
    sees=(
        r"p\.toml.*(sha265|name is 'other'|64 hexadecimal|http:// or https://|'size' must be a whole|'tokenizer' is"
        r" missing|not valid TOML)"
    ),
)
@pytest.mark.parametrize(("text", "fragment"), BAD_PRESETS)
def test_broken_preset_file_says_what_is_wrong(tmp_path: Path, sees, text: str, fragment: str) -> None:
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(OptionError, match=r"p\.toml") as info:
        presets.list_presets(tmp_path)
    assert fragment in str(info.value)
    sees(str(info.value))


@pytest.mark.fault(
    area="download",
    kind="input",
    what="a preset without n_kv_heads in its [shape]",
    sees=r"260k\.toml.*\[shape\]: 'n_kv_heads' is missing",
)
def test_missing_shape_field_is_reported(tmp_path: Path, sees) -> None:
    text = (MODELS_DIR / "260k.toml").read_text().replace("n_kv_heads = 4\n", "")
    (tmp_path / "260k.toml").write_text(text)
    with pytest.raises(OptionError) as info:
        presets.list_presets(tmp_path)
    sees(str(info.value))


def test_sha256_file(tmp_path: Path) -> None:
    data = blob(3 * download.CHUNK_SIZE + 7, 3)
    assert download.sha256_file(put(tmp_path, "f", data)) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("stem", "name"), [("stories15M", "stories15M"), ("My Model!", "My_Model"), (".hidden", "hidden"), ("!!", "model")]
)
def test_build_name(stem: str, name: str) -> None:
    assert models.build_name(stem) == name


# -------------------------------------------------------------------------------------------- resolution


def test_real_preset_resolves_from_a_models_dir(stories260k: Path, tok512: Path) -> None:
    resolved = models.resolve_model("260k", None, MODELS_DIR, search_dirs=[stories260k.parent], download=False)
    assert (resolved.name, resolved.checkpoint, resolved.tokenizer) == ("260k", stories260k, tok512)
    assert resolved.preset is not None and resolved.preset.name == "260k"


def test_llmcu_models_beats_the_cache(
    server: FileServer, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = fake_preset(server)
    monkeypatch.setenv("LLMCU_OFFLINE", "1")
    for directory in (tmp_path / "mine", clean_env):
        put(directory, "fake.bin", (server.root / "fake.bin").read_bytes())
        put(directory, "faketok.bin", (server.root / "faketok.bin").read_bytes())
    monkeypatch.setenv("LLMCU_MODELS", os.pathsep.join([str(tmp_path / "absent"), str(tmp_path / "mine")]))
    resolved = models.resolve_model(preset, None, MODELS_DIR)
    assert resolved.checkpoint == tmp_path / "mine" / "fake.bin"
    assert resolved.tokenizer == tmp_path / "mine" / "faketok.bin"
    assert resolved.name == "fake"

    monkeypatch.delenv("LLMCU_MODELS")
    resolved = models.resolve_model(preset, None, MODELS_DIR)
    assert resolved.checkpoint == clean_env / "fake.bin"
    assert resolved.tokenizer == clean_env / "faketok.bin"
    assert server.requests == []


def test_relative_llmcu_models_is_relative_to_the_working_directory(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = fake_preset(server)
    put(tmp_path / "rel", "fake.bin", (server.root / "fake.bin").read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMCU_MODELS", "rel")
    assert models.resolve_file(preset.checkpoint, download=False) == tmp_path / "rel" / "fake.bin"


def test_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert download.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LLMCU_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.default_cache_dir() == tmp_path / "xdg" / "llmcu"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert download.default_cache_dir() == Path.home() / ".cache" / "llmcu"


@pytest.mark.fault(
    area="download",
    kind="input",
    what="a model file of the wrong size in an LLMCU_MODELS directory",
    sees=r"fake\.bin.*has 9 bytes, expected 300000",
)
def test_wrong_size_in_llmcu_models_is_an_error(server: FileServer, tmp_path: Path, sees) -> None:
    preset = fake_preset(server)
    put(tmp_path / "mine", "fake.bin", b"too short")
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve_file(preset.checkpoint, search_dirs=[tmp_path / "mine"])
    message = str(info.value)
    sees(message)
    assert str(tmp_path / "mine" / "fake.bin") in message
    assert "has 9 bytes, expected 300000" in message and "LLMCU_MODELS" in message
    assert server.requests == []


def test_cache_hash_is_stamped_and_not_recomputed(
    server: FileServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = fake_preset(server).checkpoint
    cached = put(clean_env, "fake.bin", (server.root / "fake.bin").read_bytes())
    calls: list[Path] = []
    real_sha256_file = download.sha256_file

    def counting_sha256_file(path: str | os.PathLike[str]) -> str:
        calls.append(Path(path))
        return real_sha256_file(path)

    monkeypatch.setattr(download, "sha256_file", counting_sha256_file)
    for _ in range(3):
        assert models.resolve_file(remote, search_dirs=[], download=False) == cached
    assert calls == [cached]
    assert (clean_env / "fake.bin.sha256").read_text().split()[0] == remote.sha256

    os.utime(cached, ns=(1_000_000_000, 1_000_000_000))  # a changed file is hashed again
    models.resolve_file(remote, search_dirs=[], download=False)
    assert calls == [cached, cached]


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="one flipped bit in a cached model file (offline: an error; online: downloaded again)",
    sees=r"fake\.bin has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}",
)
def test_damaged_cache_file_offline_is_an_error_and_online_is_replaced(
    server: FileServer, clean_env: Path, monkeypatch: pytest.MonkeyPatch, sees
) -> None:
    remote = fake_preset(server).checkpoint
    good = (server.root / "fake.bin").read_bytes()
    damaged = good[:-1] + bytes([good[-1] ^ 1])
    put(clean_env, "fake.bin", damaged)
    monkeypatch.setenv("LLMCU_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        models.resolve_file(remote, search_dirs=[])
    assert remote.sha256 in str(info.value) and hashlib.sha256(damaged).hexdigest() in str(info.value)
    sees(str(info.value))

    monkeypatch.delenv("LLMCU_OFFLINE")
    assert models.resolve_file(remote, search_dirs=[], progress=False) == clean_env / "fake.bin"
    assert (clean_env / "fake.bin").read_bytes() == good


def test_path_model_with_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = put(tmp_path / "w", "My Model!.bin", b"weights")
    tokenizer = put(tmp_path / "w", "tok.bin", b"tokens")
    monkeypatch.chdir(tmp_path)
    resolved = models.resolve_model("w/My Model!.bin", "w/tok.bin", MODELS_DIR, search_dirs=[])
    assert resolved == models.ResolvedModel("My_Model", checkpoint, tokenizer, None)


@pytest.mark.fault(
    area="options",
    kind="input",
    what="model=path/to/mine.bin without tokenizer=",
    sees=r"tokenizer=path/to/tokenizer\.bin",
)
def test_path_model_needs_a_tokenizer(tmp_path: Path, sees) -> None:
    checkpoint = put(tmp_path, "mine.bin", b"weights")
    with pytest.raises(OptionError) as info:
        models.resolve_model(str(checkpoint), None, MODELS_DIR, search_dirs=[])
    message = str(info.value)
    sees(message)
    assert "tokenizer=path/to/tokenizer.bin" in message
    assert "tok512.bin (as in 260k)" in message and "tokenizer.bin (as in 15m, 42m, 110m)" in message


def test_path_model_accepts_a_known_tokenizer_name(tok512: Path, tmp_path: Path) -> None:
    checkpoint = put(tmp_path, "mine.bin", b"weights")
    resolved = models.resolve_model(
        str(checkpoint), "tok512.bin", MODELS_DIR, search_dirs=[tok512.parent], download=False
    )
    assert (resolved.name, resolved.tokenizer, resolved.preset) == ("mine", tok512, None)


@pytest.mark.fault(
    area="download",
    kind="input",
    what="model=nothere.bin, a file that exists nowhere",
    sees=r"nothere\.bin",
)
def test_missing_path_model_lists_where_it_looked(tmp_path: Path, clean_env: Path, sees) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve_model("nothere.bin", "tok.bin", MODELS_DIR, search_dirs=[tmp_path / "d"])
    message = str(info.value)
    sees(message)
    for place in (Path.cwd() / "nothere.bin", tmp_path / "d" / "nothere.bin", clean_env / "nothere.bin"):
        assert str(place) in message


def test_preset_with_tokenizer_override(server: FileServer, tmp_path: Path) -> None:
    preset = fake_preset(server)
    own = put(tmp_path, "own_tok.bin", b"tokens")
    resolved = models.resolve_model(preset, str(own), MODELS_DIR, search_dirs=[], progress=False)
    assert resolved.tokenizer == own
    assert [path for path, _ in server.requests] == ["/fake.bin"]


# ---------------------------------------------------------------------------------------------- download


def test_download_into_the_cache(server: FileServer, clean_env: Path) -> None:
    preset = fake_preset(server)
    resolved = models.resolve_model(preset, None, MODELS_DIR, search_dirs=[], progress=False)
    assert resolved.checkpoint == clean_env / "fake.bin"
    assert resolved.checkpoint.read_bytes() == (server.root / "fake.bin").read_bytes()
    assert resolved.tokenizer.read_bytes() == (server.root / "faketok.bin").read_bytes()
    assert sorted(p.name for p in clean_env.iterdir()) == [
        "fake.bin",
        "fake.bin.sha256",
        "faketok.bin",
        "faketok.bin.sha256",
    ]
    models.resolve_model(preset, None, MODELS_DIR, search_dirs=[])  # now cached: no new request
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(
            "sha256",
            marks=pytest.mark.fault(
                area="download",
                kind="fault",
                what="a download whose sha256 is not the preset's (the server has other content)",
                sees=(
                    r"does not have the expected content: sha256 [0-9a-f]{64}, expected 0{64}; the download was"
                    r" deleted"
                ),
            ),
        ),
        pytest.param(
            "size",
            marks=pytest.mark.fault(
                area="download",
                kind="fault",
                what="a download one byte longer than the preset's size",
                sees=r"sent 300000 bytes, expected 299999; the download was deleted",
            ),
        ),
    ],
)
def test_checksum_mismatch_keeps_nothing(server: FileServer, clean_env: Path, sees, field: str) -> None:
    remote = fake_preset(server).checkpoint
    wrong = {"sha256": "0" * 64} if field == "sha256" else {"size": 299_999}
    bad = RemoteFile(**{**remote.__dict__, **wrong})
    with pytest.raises(DownloadError) as info:
        models.resolve_file(bad, search_dirs=[], progress=False)
    message = str(info.value)
    if field == "sha256":
        assert "0" * 64 in message and str(remote.sha256) in message
    else:
        assert "300000 bytes, expected 299999" in message
    sees(message)
    assert list(clean_env.iterdir()) == []  # neither the final name nor a .part


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="connection dropped halfway through the body (one attempt), then a second run",
    sees=(
        r"stopped after 150000 of 300000 bytes\. The partial download is kept in .*fake\.bin\.part; the next try"
        r" resumes it"
    ),
)
def test_interrupted_download_leaves_no_final_file_and_resumes(server: FileServer, clean_env: Path, sees) -> None:
    remote = fake_preset(server).checkpoint
    server.breaks = 1
    with pytest.raises(DownloadError, match="partial download is kept") as info:
        download.download_file(remote, clean_env, progress=False, attempts=1)
    sees(str(info.value))
    assert not (clean_env / "fake.bin").exists()
    assert (clean_env / "fake.bin.part").stat().st_size == 150_000

    assert download.download_file(remote, clean_env, progress=False) == clean_env / "fake.bin"
    assert (clean_env / "fake.bin").read_bytes() == (server.root / "fake.bin").read_bytes()
    assert server.requests[-1] == ("/fake.bin", "bytes=150000-")
    assert not (clean_env / "fake.bin.part").exists()


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="connection dropped halfway through the body, with retries left",
    sees=r"stopped after 150000 of 300000 bytes; retrying \(2 of 3\)",
)
def test_interrupted_download_is_retried_at_once(
    server: FileServer, clean_env: Path, capsys: pytest.CaptureFixture[str], sees
) -> None:
    remote = fake_preset(server).checkpoint
    server.breaks = 1
    assert download.download_file(remote, clean_env, progress=False).read_bytes() == blob(300_000, 1)
    assert [header for _, header in server.requests] == [None, "bytes=150000-"]
    sees(capsys.readouterr().err)


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="a server that ignores Range (answers 200 with the whole file) after a dropped connection",
    sees=r"stopped after 150000 of 300000 bytes",
)
def test_server_without_range_support_restarts(server: FileServer, clean_env: Path, sees) -> None:
    remote = fake_preset(server).checkpoint
    server.ranges = False
    server.breaks = 1
    with pytest.raises(DownloadError) as info:
        download.download_file(remote, clean_env, progress=False, attempts=1)
    sees(str(info.value))
    assert download.download_file(remote, clean_env, progress=False).read_bytes() == blob(300_000, 1)
    assert server.requests[-1] == ("/fake.bin", "bytes=150000-")  # asked, got a full 200 answer


@pytest.mark.fault(
    area="download",
    kind="input",
    what="a preset with no sha256 and no size",
    sees=r"fake\.bin cannot be verified: its preset records no sha256 \(the download has [0-9a-f]{64}\)",
)
def test_unverifiable_download_warns(
    server: FileServer, clean_env: Path, capsys: pytest.CaptureFixture[str], sees
) -> None:
    remote = fake_preset(server).checkpoint
    unknown = RemoteFile(remote.filename, remote.url)
    assert download.download_file(unknown, clean_env, progress=False).stat().st_size == 300_000
    err = capsys.readouterr().err
    assert f"cannot be verified: its preset records no sha256 (the download has {remote.sha256})" in err
    sees(err)


@pytest.mark.fault(
    area="download",
    kind="input",
    what="LLMCU_OFFLINE=1 and the model in no directory",
    sees=r"Cannot find the checkpoint of preset 'fake' \(fake\.bin\).*unset LLMCU_OFFLINE",
)
def test_offline_error_lists_every_place(
    server: FileServer, tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch, sees
) -> None:
    remote = fake_preset(server).checkpoint
    (tmp_path / "a").mkdir()
    monkeypatch.setenv("LLMCU_OFFLINE", "1")
    monkeypatch.setenv("LLMCU_MODELS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve_file(remote, what="the checkpoint of preset 'fake'")
    message = str(info.value)
    assert "Cannot find the checkpoint of preset 'fake' (fake.bin)" in message
    assert f"{tmp_path / 'a' / 'fake.bin'}  (LLMCU_MODELS)" in message
    assert f"{tmp_path / 'b' / 'fake.bin'}  (LLMCU_MODELS; no such directory)" in message
    assert f"{clean_env / 'fake.bin'}  (llmcu cache)" in message
    assert "unset LLMCU_OFFLINE" in message
    assert remote.url in message and str(remote.sha256) in message and "300000 bytes" in message
    assert "LLMCU_MODELS=/path/to/models" in message
    sees(message)
    assert server.requests == []


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="HTTP 404 for the model's URL",
    sees=r"answered HTTP 404",
)
def test_failed_download_is_one_not_found_error(server: FileServer, clean_env: Path, sees) -> None:
    remote = RemoteFile("gone.bin", server.url("gone.bin"), 10, "0" * 64)
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve_file(remote, search_dirs=[], progress=False)
    message = str(info.value)
    sees(message)
    assert "HTTP 404" in message and str(clean_env / "gone.bin") in message and "(no directories" in message
    assert not (clean_env / "gone.bin").exists()


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(
            500,
            marks=pytest.mark.fault(
                area="download",
                kind="fault",
                what="HTTP 500 from the server",
                sees=r"fake\.bin answered HTTP 500 Internal Server Error",
            ),
        ),
        pytest.param(
            403,
            marks=pytest.mark.fault(
                area="download", kind="fault", what="HTTP 403 from the server", sees=r"answered HTTP 403 Forbidden"
            ),
        ),
        pytest.param(
            503,
            marks=pytest.mark.fault(
                area="download",
                kind="fault",
                what="HTTP 503 from the server",
                sees=r"answered HTTP 503 Service Unavailable",
            ),
        ),
    ],
)
def test_http_errors_are_not_retried_and_keep_nothing(server: FileServer, clean_env: Path, sees, status: int) -> None:
    remote = fake_preset(server).checkpoint
    server.status = status
    with pytest.raises(DownloadError) as info:
        download.download_file(remote, clean_env, progress=False)
    sees(str(info.value))
    assert len(server.requests) == 1  # a refusal is an answer: asking again would not change it
    assert list(clean_env.iterdir()) == []


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="no server listening at the URL (connection refused: offline, or a firewall)",
    sees=r"Cannot find .*fake\.bin.*cannot reach http://127\.0\.0\.1:\d+/fake\.bin \(.*[Cc]onnection refused",
)
def test_unreachable_server(server: FileServer, clean_env: Path, sees) -> None:
    remote = fake_preset(server).checkpoint
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = RemoteFile(
            remote.filename, f"http://127.0.0.1:{closed.getsockname()[1]}/fake.bin", remote.size, remote.sha256
        )
    with pytest.raises(ModelNotFoundError) as info:
        models.resolve_file(dead, search_dirs=[], progress=False)
    sees(str(info.value))
    assert not (clean_env / "fake.bin").exists() and not (clean_env / "fake.bin.part").exists()


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="a server that stalls halfway through the body for longer than the timeout",
    sees=r"the download of .*fake\.bin broke off after 150000 bytes \(.*timed out.*\)\. The partial download is kept",
)
def test_stalled_download_times_out_keeps_the_part_and_resumes(server: FileServer, clean_env: Path, sees) -> None:
    remote = fake_preset(server).checkpoint
    server.stall = 2.0
    with pytest.raises(DownloadError) as info:
        download.download_file(remote, clean_env, progress=False, timeout=0.3, attempts=1)
    sees(str(info.value))
    assert not (clean_env / "fake.bin").exists()
    assert (clean_env / "fake.bin.part").stat().st_size == 150_000
    server.stall = 0.0
    assert download.download_file(remote, clean_env, progress=False).read_bytes() == blob(300_000, 1)
    assert server.requests[-1] == ("/fake.bin", "bytes=150000-")


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="a server that resumes at another offset than the Range asked for (206 with a wrong Content-Range)",
    sees=r"resumed at the wrong place; retrying",
)
def test_resume_at_the_wrong_offset_restarts(
    server: FileServer, clean_env: Path, capsys: pytest.CaptureFixture[str], sees
) -> None:
    remote = fake_preset(server).checkpoint
    (clean_env).mkdir(parents=True, exist_ok=True)
    (clean_env / "fake.bin.part").write_bytes(blob(300_000, 1)[:100_000])
    server.wrong_range = True
    assert download.download_file(remote, clean_env, progress=False).read_bytes() == blob(300_000, 1)
    sees(capsys.readouterr().err)
    # the part was dropped and the file fetched again from its start, not spliced at the wrong place
    assert [header for _, header in server.requests] == ["bytes=100000-", None]
    assert not (clean_env / "fake.bin.part").exists()


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="a left-over .part whose bytes are not the file's (another version of it): resumed, then the hash fails",
    sees=r"does not have the expected content: sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; the download was deleted",
)
def test_foreign_partial_file_is_detected_and_deleted(server: FileServer, clean_env: Path, sees) -> None:
    remote = fake_preset(server).checkpoint
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "fake.bin.part").write_bytes(blob(100_000, 99))  # same name, other content
    with pytest.raises(DownloadError) as info:
        download.download_file(remote, clean_env, progress=False)
    sees(str(info.value))
    assert list(clean_env.iterdir()) == []  # nothing truncated or wrong is left to be trusted
    assert download.download_file(remote, clean_env, progress=False).read_bytes() == blob(300_000, 1)


def test_oversized_partial_file_is_restarted(server: FileServer, clean_env: Path) -> None:
    remote = fake_preset(server).checkpoint
    clean_env.mkdir(parents=True, exist_ok=True)
    (clean_env / "fake.bin.part").write_bytes(bytes(400_000))
    path = download.download_file(remote, clean_env, progress=False)
    assert path.read_bytes() == blob(300_000, 1)
    assert server.requests == [("/fake.bin", None)]  # started from 0, no Range for a part that cannot fit


@pytest.mark.fault(
    area="download",
    kind="fault",
    what="two processes download the same model into the cache at once (two builds started together)",
    sees=r"another llmcu process is downloading into .*; waiting for it to finish",
)
def test_concurrent_downloads_of_one_file_fetch_it_once(server: FileServer, clean_env: Path, sees) -> None:
    """The second process waits for the first (a lock on the cache directory), then finds the verified file:
    one request, one intact file, no .part appended to by two writers. The first download is held halfway
    until the second process says it waits."""
    remote = fake_preset(server).checkpoint
    server.gate = threading.Event()
    first: list[Path] = []
    thread = threading.Thread(target=lambda: first.append(download.download_file(remote, clean_env, progress=False)))
    thread.start()
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    code = (
        "import sys; from llmcu.model import download; from llmcu.model.presets import RemoteFile\n"
        f"remote = RemoteFile({remote.filename!r}, {remote.url!r}, {remote.size!r}, {remote.sha256!r})\n"
        f"print(download.download_file(remote, {str(clean_env)!r}, progress=False))\n"
    )
    second = subprocess.Popen(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(ROOT / "site_scons")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        waiting = second.stderr.readline()  # printed before it blocks on the lock (or its traceback)
    finally:
        server.gate.set()
    out, rest = second.communicate(timeout=60)
    thread.join(timeout=60)
    assert second.returncode == 0, waiting + rest
    sees(waiting)
    assert first == [clean_env / "fake.bin"] and out.strip() == str(clean_env / "fake.bin")
    assert (clean_env / "fake.bin").read_bytes() == blob(300_000, 1)
    assert server.requests == [("/fake.bin", None)]
    assert not (clean_env / "fake.bin.part").exists()
