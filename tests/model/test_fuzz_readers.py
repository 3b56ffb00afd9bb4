"""The fuzz harness's entry points (tools/fuzz/fuzz_readers.py), driven without atheris: every reader of
untrusted bytes gets its seeds and a bounded, deterministic set of mutants, and may only succeed or raise the
project's own error. atheris runs the same entry points on demand (tools/fuzz/README.md)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmcu.core.errors import LlmcuError
from support.build import ROOT

_SPEC = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "tools" / "fuzz" / "fuzz_readers.py")
assert _SPEC is not None and _SPEC.loader is not None
fuzz = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fuzz)

# Inputs per target: together a few seconds. A longer run: tools/fuzz/fuzz_readers.py TARGET --mutations N.
BUDGET = {"checkpoint": 1500, "tokenizer": 1500, "weightsfile": 300, "protocol": 1500, "uart": 1500,
          "target_toml": 600, "gguf": 400, "safetensors": 400}  # fmt: skip


def _fuzz(name: str, sees) -> tuple[int, int]:
    accepted = rejected = 0
    for count, data in enumerate(fuzz.corpus(name, BUDGET[name], seed=20240607)):
        try:
            error = fuzz.run_one(name, data)
        except Exception as exc:  # the bug the fuzzer is for: show the input that triggers it
            raise AssertionError(f"{name} input {count} ({data[:120]!r}...) raised {type(exc).__name__}") from exc
        if error is None:
            accepted += 1
        else:
            assert isinstance(error, LlmcuError)
            sees(str(error))
            rejected += 1
    return accepted, rejected


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="1500 mutants of valid v0/v1/v2 checkpoints (bit flips, int32 fields set to 0/-1/INT_MAX/2^20/..., "
    "cuts, splices, inserted and duplicated chunks)",
    sees=r"^fuzz\.bin: (truncated|\d+ trailing bytes|\w+ = -?\d+ is not in 1\.\.|unsupported version|"
    r"shared_classifier byte|group size|dim \d+ is not a multiple|n_heads \d+ is not a multiple|head size|"
    r"non-finite|not a llama2\.c checkpoint)",
)
def test_fuzz_checkpoint(sees) -> None:
    accepted, rejected = _fuzz("checkpoint", sees)
    assert accepted >= 6 and rejected > 1000  # the seeds parse; most mutants do not


@pytest.mark.fault(
    area="tokenizer",
    kind="input",
    what="1500 mutants of a valid tokenizer.bin (bit flips, lengths set to -1/INT_MAX/..., cuts, splices)",
    sees=r"^fuzz\.bin: (token \d+ has length|\d+ stray bytes|file is truncated|invalid max_token_length|"
    r"token \d+ has a NaN score|the file holds no tokens)",
)
def test_fuzz_tokenizer(sees) -> None:
    accepted, rejected = _fuzz("tokenizer", sees)
    assert accepted >= 1 and rejected > 500


@pytest.mark.fault(
    area="deploy",
    kind="input",
    what="300 mutants of a weights file (model.bin) header, with its CRC fixed so the fields behind it are read",
    sees=r"model\.bin(: the header's (checksum does not match|label is not ASCII)| is not an llmcu weights file)",
)
def test_fuzz_weightsfile(sees) -> None:
    accepted, rejected = _fuzz("weightsfile", sees)
    assert accepted > 0 and rejected > 0


@pytest.mark.fault(
    area="uart",
    kind="input",
    what="1500 mutants of device output streams (a run, a fault report, a refusal) fed to the protocol parser",
    sees=r"^(bad start line|bad token record|unexpected line after the text)",
)
def test_fuzz_protocol(sees) -> None:
    accepted, rejected = _fuzz("protocol", sees)
    assert accepted > 100 and rejected > 100


def test_fuzz_uart_capture_state_machine() -> None:
    # the capture swallows nothing silently: it either completes or raises a CaptureError with what arrived
    for data in fuzz.corpus("uart", BUDGET["uart"], seed=20240607):
        assert fuzz.run_one("uart", data) is None


@pytest.mark.fault(
    area="options",
    kind="input",
    what="600 mutants of the project's target.toml files (values of the wrong type, tables replaced by values, "
    "bytes that are not UTF-8)",
    sees=r"target\.toml(: not valid TOML|: missing `\w+`|: `\w+` must be|: kind |: run\.method| \[\[memory\]\]|"
    r": a baremetal target|: `memory` must be| \[\w+\]: )",
)
def test_fuzz_target_toml(sees) -> None:
    accepted, rejected = _fuzz("target_toml", sees)
    assert accepted >= 4 and rejected > 100


# Inputs that crashed a reader before its fix: each stays a regression case.
@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="400 mutants of small GGUF files (F32 and F16 tensors, a sentencepiece vocabulary): bit flips, counts and "
    "lengths set to 0/-1/INT_MAX/..., cuts, splices (their magic too)",
    sees=r"fuzz\.gguf: (not a readable GGUF file, truncated or corrupt|not a GGUF file: it starts with|"
    r"non-finite weights|piece \d+ is|"
    r"architecture|metadata|tensor|.* is not a multiple|n_kv_heads|head|dim|hidden_dim|vocab_size|seq_len|"
    r"n_layers|n_heads|tokenizer|BOS|EOS|the vocabulary|RoPE|rope_theta|RMSNorm|\d+ pieces)",
)
def test_fuzz_gguf(sees) -> None:
    accepted, rejected = _fuzz("gguf", sees)
    assert accepted >= 2 and rejected > 300


@pytest.mark.fault(
    area="checkpoint",
    kind="input",
    what="400 mutants of a Hugging Face folder's model.safetensors (the JSON header and the tensor data)",
    sees=r"hf(/model\.safetensors)?: (the header is not valid JSON|header of [\d,]+ bytes does not fit|"
    r"tensor '.*' (lies at bytes|has|needs)|tensors .* overlap|non-finite weights|[\d,]+ bytes, too short|"
    r"tensor .* is missing|.* has shape|the header is not a JSON object|no tensor|.*tie_word_embeddings)",
)
def test_fuzz_safetensors(sees) -> None:
    accepted, rejected = _fuzz("safetensors", sees)
    assert accepted >= 1 and rejected > 300


REGRESSIONS = [
    # a summary line garbled on the wire: format_summary raised ValueError after the run
    ("protocol", b"\x02llmcu 1 unit=cycles\nhi\n\x1esum tokens=2 tok_per_s=4x0 cost_per_token=1e999 peak_stack=u12\n"
     b"\x03llmcu end status=ok\n"),
    # noise with the end and start markers before the ready line: a ProtocolError ended the capture
    ("uart", b"boot \x03 noise \x02junk\n\x05llmcu ready 1 target=x\n\x02llmcu 1\nhi\n\x03llmcu end status=ok\n"),
    # a target.toml that is not UTF-8: UnicodeDecodeError from tomllib
    ("target_toml", b'name = "\xff"\n'),
    # a [run] that is a value, a size "010K", a speed that is a string: AttributeError, ValueError, ValueError
    ("target_toml", b'name = "x"\nkind = "hosted"\nrun = 3\n[toolchain]\n'),
    ("target_toml", b'name = "x"\nkind = "hosted"\n[toolchain]\n[[memory]]\nname = "a"\norigin = 0\nsize = "010K"\n'),
    ("target_toml", b'name = "x"\nkind = "hosted"\n[toolchain]\n[[memory]]\nname = "a"\norigin = 0\nsize = 1\n'
     b'speed = "fast"\n'),
    ("target_toml", b'name = "x"\nkind = "hosted"\nmemory = [1]\n[toolchain]\n'),
    ("target_toml", b'name = "x"\nkind = "hosted"\n[toolchain]\n[cpu]\nclock_hz = "480M"\n'),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data"), REGRESSIONS)
def test_fuzz_regressions(name: str, data: bytes) -> None:
    error = fuzz.run_one(name, data)
    assert error is None or isinstance(error, LlmcuError)


def test_harness_command_line_without_atheris(tmp_path: Path) -> None:
    crash = tmp_path / "input.bin"
    crash.write_bytes(REGRESSIONS[0][1])
    script = str(ROOT / "tools" / "fuzz" / "fuzz_readers.py")
    run = subprocess.run([sys.executable, script, "protocol", "--mutations", "200", "--seed", "5"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.fullmatch(r"protocol: 204 inputs, \d+ rejected with an llmcu error, none crashed\n", run.stdout)
    replay = subprocess.run([sys.executable, script, "protocol", "--replay", str(crash)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert replay.returncode == 0 and f"{crash}: accepted" in replay.stdout, replay.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is optional (tools/fuzz/README.md)")
def test_harness_runs_under_atheris(tmp_path: Path) -> None:
    script = str(ROOT / "tools" / "fuzz" / "fuzz_readers.py")
    run = subprocess.run([sys.executable, script, "checkpoint", "-atheris_runs=300"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert run.returncode == 0 and "Done 300 in" in run.stderr, run.stderr[-2000:]
