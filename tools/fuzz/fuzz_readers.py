#!/usr/bin/env python3
"""Fuzz llmcu's readers of untrusted bytes: checkpoints, tokenizers, weights-file headers, the device output
protocol (and the UART capture's state machine on top of it) and target.toml.

Each reader has one entry point, ``fuzz_<name>(data: bytes) -> None``. The only accepted outcomes are success
and the project's own error (:class:`llmcu.core.errors.LlmcuError` and its subclasses, which end a build with a
message); any other exception is a bug. Two ways to drive them:

* on demand, coverage-guided with atheris (optional: ``pip install -r tools/fuzz/requirements.txt``)::

      python3 tools/fuzz/fuzz_readers.py checkpoint -atheris_runs=100000
      python3 tools/fuzz/fuzz_readers.py protocol -max_total_time=600 corpus_dir/

  The arguments after the target name are libFuzzer's. The seed corpus (valid inputs of each format) is
  fed first, so the fuzzer starts from inputs that get past the magic numbers.

* without atheris, a bounded mutation run (what the default test suite does, tests/model/test_fuzz_readers.py)::

      python3 tools/fuzz/fuzz_readers.py checkpoint --mutations 5000 --seed 1

  The mutator is deliberately simple: bit flips, interesting integers written over 32-bit fields, cuts,
  duplicated and deleted chunks, splices of two seeds, and for TOML, values replaced by values of other types.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from llmcu.builder import weightsfile
from llmcu.core.config import ModelConfig
from llmcu.core.errors import LlmcuError
from llmcu.device import protocol, uart
from llmcu.model import checkpoint, tokenizer
from llmcu.model.gguf_writer import write_gguf
from llmcu.platform import targets

ROOT = Path(__file__).resolve().parents[2]

# Small enough that a mutated header that still describes the model decodes in microseconds.
TINY = ModelConfig(8, 12, 2, 2, 1, 16, 4, True)
TINY_UNSHARED = ModelConfig(8, 12, 1, 2, 2, 12, 2, False)
# GGUF and Hugging Face seeds carry a sentencepiece vocabulary, which has the 256 byte pieces: 270 tokens.
TINY_IMPORT = ModelConfig(8, 12, 1, 2, 1, 270, 4, False)

_SCRATCH = Path(tempfile.mkdtemp(prefix="llmcu-fuzz-"))


# ---- entry points ----------------------------------------------------------------------------------------


def fuzz_checkpoint(data: bytes) -> None:
    """The whole checkpoint reader: header, size check, decoding, the NaN/Inf check and the report."""
    ckpt = checkpoint.parse_checkpoint(data, "fuzz.bin", allow_nonfinite=True)
    checkpoint.nonfinite_report(ckpt)
    with contextlib.suppress(checkpoint.CheckpointError):  # non-finite weights are a reported error
        checkpoint.parse_checkpoint(data, "fuzz.bin")


def fuzz_tokenizer(data: bytes) -> None:
    """Parse, then use the vocabulary the way a build does: encode a prompt, decode every token, write it."""
    tok = tokenizer.parse_tokenizer(data, source="fuzz.bin")
    with contextlib.suppress(tokenizer.TokenizerError):  # no " " piece, no byte fallback: reported errors
        tok.encode("Once upon a time \u00e9\u4e16", bos=True, eos=True)
    for token in range(min(tok.vocab_size, 64)):
        tok.decode(1, token)
        tokenizer.printable(tok.pieces[token])
    tokenizer.sorted_order(tok)
    assert tokenizer.parse_tokenizer(tok.to_bytes()) == tok


def fuzz_weightsfile(data: bytes) -> None:
    """A weights file's header, as a file (the reader takes a path); also with its CRC made valid, so that
    the fields behind the checksum are reached."""
    path = _SCRATCH / "model.bin"
    path.write_bytes(data)
    weightsfile.read_header(path)


def fuzz_weightsfile_fixed_crc(data: bytes) -> None:
    if len(data) >= weightsfile.HEADER_BYTES:
        head = bytearray(data[: weightsfile.HEADER_BYTES])
        head[:8] = weightsfile.MAGIC
        struct.pack_into("<I", head, 60, _crc32(bytes(head[:60])))
        data = bytes(head) + data[weightsfile.HEADER_BYTES :]
    fuzz_weightsfile(data)


def fuzz_protocol(data: bytes) -> None:
    """The output protocol parser, fed whole and in two pieces, and what is printed from its result."""
    cut = data[0] % (len(data) + 1) if data else 0
    for chunks in ((data,), (data[:cut], data[cut:])):
        parser = protocol.ProtocolParser(on_text=lambda piece: None)
        for chunk in chunks:
            parser.feed(chunk)
        output = parser.output
        output.token_sequence()
        protocol.format_summary(output)
        protocol.describe_fault(output.end)
        with contextlib.suppress(protocol.ProtocolError):
            output.summary_number("tok_per_s")


def fuzz_uart(data: bytes) -> None:
    """The UART capture's byte-level state machine (ready line, command, run, resets) on arbitrary bytes."""
    capture = uart.Capture(port="fuzz")
    sent: list[bytes] = []
    machine = uart._Capturer(capture, b"\n", sent.append, on_text=None, resets=1)
    cut = data[-1] % (len(data) + 1) if data else 0
    try:
        machine.feed(data[:cut])
        if not machine.done:
            machine.feed(data[cut:])
    except uart.CaptureError:
        pass
    except LlmcuError as error:  # the capture reports through CaptureError, which carries what arrived
        raise AssertionError(f"the capture raised {type(error).__name__}, not a CaptureError: {error}") from error
    uart._partial(machine)
    with contextlib.suppress(uart.CaptureError):
        uart.check_capture(capture, "fw.elf")


def fuzz_gguf(data: bytes) -> None:
    """A GGUF file: its metadata, the llama checks, every tensor (dequantized where quantized) and its vocabulary."""
    from llmcu.model import sources

    path = _SCRATCH / "fuzz.gguf"
    path.write_bytes(data)
    sources.read_model(path)
    sources.read_vocab(path)


def fuzz_safetensors(data: bytes) -> None:
    """A Hugging Face folder whose model.safetensors holds these bytes (its config.json is TINY_IMPORT's)."""
    from llmcu.model import sources

    folder = _SCRATCH / "hf"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(_hf_config(TINY_IMPORT))
    (folder / "model.safetensors").write_bytes(data)
    sources.read_model(folder)


def fuzz_target_toml(data: bytes) -> None:
    """targets.load_target on a target.toml of these bytes."""
    folder = _SCRATCH / "targets" / "fuzz"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "target.toml").write_bytes(data)
    target = targets.load_target("fuzz", folder.parent)
    assert isinstance(target.all_cflags, tuple)
    for region in target.memory:
        target.region(region.name)


ENTRY_POINTS: dict[str, Callable[[bytes], None]] = {
    "checkpoint": fuzz_checkpoint,
    "tokenizer": fuzz_tokenizer,
    "weightsfile": fuzz_weightsfile_fixed_crc,
    "protocol": fuzz_protocol,
    "uart": fuzz_uart,
    "target_toml": fuzz_target_toml,
    "gguf": fuzz_gguf,
    "safetensors": fuzz_safetensors,
}


def _crc32(data: bytes) -> int:
    import zlib

    return zlib.crc32(data)


def run_one(name: str, data: bytes) -> LlmcuError | None:
    """Feeds one input to an entry point: None on success, the project error it raised; anything else
    propagates (that is the bug the fuzzer looks for)."""
    try:
        ENTRY_POINTS[name](data)
    except LlmcuError as error:
        return error
    return None


# ---- seeds -----------------------------------------------------------------------------------------------


def _tokenizer_bytes() -> bytes:
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", *(f"<0x{b:02X}>".encode() for b in range(256))]
    pieces += [b" ", b"O", b"n", b"c", b"e", b"On", b"Onc", b"Once", b" O", b" Once", b"\xe4\xb8\x96"]
    scores = np.arange(len(pieces), dtype=np.float32) / 7 - 3
    return tokenizer.Tokenizer(pieces, scores, max(len(p) for p in pieces)).to_bytes()


def _weightsfile_bytes() -> bytes:
    data = bytes(range(256)) * 4
    layout = weightsfile.WeightsFileLayout(0x1234_5678_9ABC_DEF0, len(data), "260k-q8 fuzz")
    return weightsfile.header(layout, data) + data


RUN = (
    b"boot noise\r\n\x05llmcu ready 1 target=qemu-m7 model=260k quant=q8\n"
    b"\x02llmcu 1 target=qemu-m7 model=260k quant=q8 unit=instructions clock_hz=0\n"
    b"Once upon a time\n"
    b"\x1etok pos=0 token=1 next=403 cost=1200\n\x1etok pos=1 token=403 next=407 cost=1300\n"
    b"\x1ephase matmul=10 attention=2\n"
    b"\x1esum tokens=2 prompt_tokens=2 generated=0 cost=2500 cost_per_token=1250.0 tok_per_s=400.00 "
    b"peak_stack=512\n"
    b"\x03llmcu end status=ok\n"
)
FAULT = (
    b"\x05llmcu ready 1 target=stm32h743\n\x02llmcu 1 unit=cycles\nOnce\n\x1etok pos=0 token=1 next=2 cost=5\n"
    b"\x03llmcu end status=fault reason=HardFault pc=0x08001234 lr=0xfffffff9 cfsr=0x00008200 hfsr=0x40000000 "
    b"bfar=0x30000000 sp=0x20001000\n"
)
REFUSED = b"\x05llmcu ready 1\n\x15llmcu error reason=bad_command detail=steps\n"


def _hf_config(config: ModelConfig) -> str:
    import json

    return json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": config.dim,
                       "intermediate_size": config.hidden_dim, "num_hidden_layers": config.n_layers,
                       "num_attention_heads": config.n_heads, "num_key_value_heads": config.n_kv_heads,
                       "vocab_size": config.vocab_size, "max_position_embeddings": config.seq_len,
                       "tie_word_embeddings": config.shared_classifier})  # fmt: skip


def _model_seeds(kind: str) -> list[bytes]:
    """TINY_IMPORT as a GGUF file (F32 and F16, with a byte-fallback vocabulary) or a model.safetensors."""
    sys.path.insert(0, str(ROOT / "tests"))  # tests/support/modelfiles.py writes Hugging Face folders
    from support.modelfiles import write_hf_folder

    ckpt = checkpoint.random_checkpoint(TINY_IMPORT, seed=5)
    tok = tokenizer.parse_tokenizer(_tokenizer_bytes(), TINY_IMPORT.vocab_size)
    out = []
    if kind == "gguf":
        for qtype in ("F32", "F16"):
            out.append(write_gguf(_SCRATCH / f"seed-{qtype}.gguf", ckpt, tok, qtype=qtype).read_bytes())
        return out
    folder = write_hf_folder(_SCRATCH / "seed-hf", ckpt)
    return [(folder / "model.safetensors").read_bytes()]


def _target_toml_seeds() -> list[bytes]:
    seeds = []
    for path in sorted((ROOT / "targets").glob("*/target.toml")):
        text = path.read_text()
        # board sources are files beside the real target.toml; the fuzzed one has none
        seeds.append(re.sub(r"(?ms)^sources\s*=\s*\[.*?\]", "", text).encode())
    return seeds


def seeds(name: str) -> list[bytes]:
    """Valid inputs of each format: where mutation starts."""
    if name == "checkpoint":
        return [
            checkpoint.checkpoint_bytes(checkpoint.random_checkpoint(config, seed=version), version, 4)
            for version in (0, 1, 2)
            for config in (TINY, TINY_UNSHARED)
        ]
    if name == "tokenizer":
        return [_tokenizer_bytes()]
    if name == "weightsfile":
        return [_weightsfile_bytes()]
    if name in ("protocol", "uart"):
        return [RUN, FAULT, REFUSED, RUN.replace(b"\x1etok pos=1", b"\x05llmcu ready 1 target=x\n\x1etok pos=1")]
    if name == "target_toml":
        return _target_toml_seeds()
    if name in ("gguf", "safetensors"):
        return _model_seeds(name)
    raise KeyError(name)


# ---- the mutator (for runs without atheris) ----------------------------------------------------------------

INTERESTING_32 = (0, 1, -1, 2, 3, 7, 64, 255, 256, 1 << 16, 1 << 20, (1 << 20) + 1, 1 << 22, 1 << 24,
                  (1 << 31) - 1, -(1 << 31), -(1 << 20), 0x616B3432)  # fmt: skip
TOML_VALUES = ("0", "-1", "1e400", "nan", "inf", "true", '""', '"x"', '"64Q"', '"-1K"', "[]", "[1, 2]", '["a", 3]',
               "{}", "{ a = 1 }", "[[1]]", "0x7fffffffffffffff", '"\\u00e9"', "2024-01-01")  # fmt: skip


def mutate(data: bytes, rng: random.Random, others: list[bytes], toml: bool = False) -> bytes:
    """One random mutation of ``data`` (sometimes a few in a row)."""
    if toml and rng.random() < 0.7:  # mostly structure-aware: byte noise rarely gets past the TOML parser
        return _mutate_toml(data, rng) if rng.random() < 0.7 else _mutate_toml(_mutate_toml(data, rng), rng)
    out = bytearray(data)
    for _ in range(1 + (rng.random() < 0.3) * rng.randint(1, 4)):
        choice = rng.randrange(9 if toml else 8)
        if not out and choice not in (5, 6):
            choice = 5
        if choice == 0:  # flip a bit
            at = rng.randrange(len(out))
            out[at] ^= 1 << rng.randrange(8)
        elif choice == 1:  # an interesting byte
            out[rng.randrange(len(out))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x02, 0x03, 0x05, 0x1E))
        elif choice == 2 and len(out) >= 4:  # an interesting 32-bit integer, often on a field boundary
            at = rng.randrange(len(out) - 3)
            at -= at % 4 if rng.random() < 0.7 else 0
            struct.pack_into("<i", out, at, rng.choice(INTERESTING_32))
        elif choice == 3:  # cut
            del out[rng.randrange(len(out) + 1) :]
        elif choice == 4:  # delete a chunk
            at = rng.randrange(len(out))
            del out[at : at + rng.randint(1, 64)]
        elif choice == 5:  # insert random bytes
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice == 6:  # duplicate a chunk
            at = rng.randrange(len(out) + 1)
            out[at:at] = out[at : at + rng.randint(1, 256)]
        elif choice == 7 and others:  # splice with another seed
            other = rng.choice(others)
            at = rng.randrange(len(out) + 1)
            out = out[:at] + other[rng.randrange(len(other) + 1) :]
        elif choice == 8:  # TOML: a value of another type, a table turned into a value
            out = bytearray(_mutate_toml(bytes(out), rng))
    return bytes(out)


def _mutate_toml(data: bytes, rng: random.Random) -> bytes:
    lines = data.decode("utf-8", errors="replace").split("\n")
    values = [i for i, line in enumerate(lines) if re.match(r"\s*[\w.\"-]+\s*=", line)]
    tables = [i for i, line in enumerate(lines) if line.strip().startswith("[")]
    if tables and rng.random() < 0.2:
        at = rng.choice(tables)
        name = lines[at].strip("[] ")
        lines[at] = f"{name} = {rng.choice(TOML_VALUES)}\n[unrelated_{at}]"
    elif values:
        at = rng.choice(values)
        key = lines[at].split("=", 1)[0]
        lines[at] = f"{key}= {rng.choice(TOML_VALUES)}"
    return "\n".join(lines).encode()


def corpus(name: str, count: int, seed: int) -> Iterator[bytes]:
    """The seeds, then ``count`` mutants of them (deterministic for a given seed)."""
    rng = random.Random(seed)
    base = seeds(name)
    yield from base
    pool = list(base)
    for _ in range(count):
        mutant = mutate(rng.choice(pool), rng, base, toml=name == "target_toml")
        yield mutant
        if len(pool) < 256 and rng.random() < 0.1:
            pool.append(mutant)  # keep some mutants: mutations compound, as in a fuzzer's corpus


# ---- command line ----------------------------------------------------------------------------------------


def _atheris_main(name: str, argv: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print(
            "atheris is not installed: `pip install -r tools/fuzz/requirements.txt`, or run without it: "
            f"{sys.argv[0]} {name} --mutations N",
            file=sys.stderr,
        )
        return 2
    entry = ENTRY_POINTS[name]

    def test_one_input(data: bytes) -> None:
        with contextlib.suppress(LlmcuError):
            entry(data)

    seed_dir = _SCRATCH / f"seeds-{name}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(seeds(name)):
        (seed_dir / f"seed{index}").write_bytes(data)
    corpus_dirs = [arg for arg in argv if not arg.startswith("-")]
    flags = [arg for arg in argv if arg.startswith("-")]
    atheris.instrument_all()  # coverage of the already imported llmcu modules guides the mutations
    # libFuzzer reads every corpus directory; the first one also receives new interesting inputs
    atheris.Setup([sys.argv[0], *flags, *corpus_dirs, str(seed_dir)], test_one_input)
    atheris.Fuzz()
    return 0


def _mutation_main(name: str, mutations: int, seed: int) -> int:
    errors = 0
    for count, data in enumerate(corpus(name, mutations, seed), 1):
        try:
            if run_one(name, data) is not None:
                errors += 1
        except Exception:
            crash = Path(f"crash-{name}-{count}.bin")
            crash.write_bytes(data)
            print(f"{name}: input {count} raised a non-llmcu exception; it is saved in {crash}", file=sys.stderr)
            raise
    print(f"{name}: {count} inputs, {errors} rejected with an llmcu error, none crashed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Other arguments go to libFuzzer (atheris)."
    )
    parser.add_argument("target", choices=sorted(ENTRY_POINTS))
    parser.add_argument("--mutations", type=int, help="no atheris: feed the seeds and N mutants of them")
    parser.add_argument("--seed", type=int, default=1, help="random seed of --mutations")
    parser.add_argument("--replay", nargs="+", type=Path, metavar="FILE", help="feed these inputs (e.g. a crash)")
    known, rest = parser.parse_known_args(args)
    if known.replay:
        for path in known.replay:
            error = run_one(known.target, path.read_bytes())  # a crash shows its traceback here
            print(f"{path}: {'rejected: ' + str(error) if error else 'accepted'}")
        return 0
    if known.mutations is not None:
        return _mutation_main(known.target, known.mutations, known.seed)
    return _atheris_main(known.target, rest)


if __name__ == "__main__":
    raise SystemExit(main())
