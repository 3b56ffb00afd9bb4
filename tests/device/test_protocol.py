"""The output protocol parser: streaming, noise before the start, resets, malformed lines."""

from __future__ import annotations

import pytest

from llmcu.core.errors import ProtocolError
from llmcu.device.protocol import ProtocolParser, format_summary, parse

STREAM = (
    b"\x02llmcu 1 target=host model=260k quant=q8 unit=ns clock_hz=1000000000\n"
    b"Once upon a time\n"
    b"\x1etok pos=0 token=1 next=403 cost=1000\n"
    b"\x1etok pos=1 token=403 next=407 cost=1200\n"
    b"\x1esum tokens=2 prompt_tokens=2 generated=0 cost=2200 cost_per_token=1100.0 tok_per_s=909090.91 "
    b"peak_stack=512\n"
    b"\x03llmcu end status=ok\n"
)


def test_whole_stream() -> None:
    out = parse(STREAM)
    assert out.ok
    assert out.header["target"] == "host" and out.header["version"] == "1"
    assert out.text == b"Once upon a time\n"
    assert [t.next for t in out.tokens] == [403, 407]
    assert out.summary_number("cost_per_token") == 1100.0
    assert "2 tokens" in format_summary(out)


def test_byte_by_byte_streaming_and_text_callback() -> None:
    seen = bytearray()
    parser = ProtocolParser(on_text=seen.extend)
    for byte in STREAM:
        parser.feed(bytes([byte]))
    assert bytes(seen) == b"Once upon a time\n"
    assert parser.output.ok


def test_noise_before_start_is_kept_apart() -> None:
    out = parse(b"\xff\xfeboot v1.0\r\n" + STREAM)
    assert out.ok and out.preamble == b"\xff\xfeboot v1.0\r\n"
    assert out.text == b"Once upon a time\n"


def test_restart_mid_run_starts_over() -> None:
    out = parse(STREAM[:100] + STREAM)
    assert out.ok and out.restarts == 1
    assert out.text == b"Once upon a time\n"


def test_incomplete_stream_is_not_ok() -> None:
    out = parse(STREAM[:-10])
    assert not out.complete and not out.ok


def test_error_status() -> None:
    out = parse(b"\x02llmcu 1 unit=ns\n\n\x03llmcu end status=error reason=prompt_too_long\n")
    assert out.complete and not out.ok and out.reason == "prompt_too_long"


def test_malformed_lines_raise() -> None:
    with pytest.raises(ProtocolError):
        parse(b"\x02garbage\n")
    with pytest.raises(ProtocolError):
        parse(b"\x02llmcu 1\ntext\n\x1etok pos=x\n")


def test_phase_record_is_collected() -> None:
    stream = STREAM.replace(b"\x1esum", b"\x1ephase pos=128 matmul=700 attention=200 other=100\n\x1esum")
    out = parse(stream)
    assert out.ok and out.phases == {"pos": "128", "matmul": "700", "attention": "200", "other": "100"}
