"""The build's actions, callable from SCons or from a test: generate the model's C, run a program."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .checkpoint import read_checkpoint
from .codegen import GeneratedModel, generate, write_quant_report
from .errors import LlmcuError
from .project import BuildSettings
from .protocol import ProtocolParser, RunOutput, format_summary
from .tokenizer import read_tokenizer


def generate_sources(settings: BuildSettings) -> GeneratedModel:
    ckpt = read_checkpoint(settings.checkpoint)
    if settings.preset is not None:  # a wrong or corrupt download is caught here, before any C is generated
        settings.preset.check_shape(ckpt.config, settings.checkpoint)
    tok = read_tokenizer(settings.tokenizer, ckpt.config.vocab_size)
    model = generate(
        ckpt,
        tok,
        settings.plan,
        settings.gen_dir,
        model_name=settings.model_name,
        tokenizer_name=settings.tokenizer.name,
        seq_len=settings.seq_len,
        progress=sys.stderr.isatty(),
    )
    write_quant_report(model, settings.out_dir / "quant_report.json", settings.out_dir / "quant_report.md")
    return model


def run_host_program(program: Path, args: list[str], *, echo: bool = True, timeout: float = 600) -> RunOutput:
    """Run a host build, streaming its text to stdout as it arrives, and parse its protocol output."""

    def show(piece: bytes) -> None:
        sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()

    parser = ProtocolParser(on_text=show if echo else None)
    with subprocess.Popen([str(program), *args], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while chunk := process.stdout.read1(65536):
            parser.feed(chunk)
        code = process.wait(timeout=timeout)
    output = parser.output
    if code != 0 or not output.ok:
        reason = output.reason or (f"exit status {code}" if code else "no end marker")
        raise LlmcuError(f"{program.name} failed: {reason}")
    if echo:
        print(f"[llmcu] {format_summary(output)}", flush=True)
    return output
