"""Build options: defaults, allowed values and errors, without SCons."""

from __future__ import annotations

import pytest

from llmcu.errors import OptionError
from llmcu.options import build_options, check_unknown, help_text, validate

TABLE = build_options(["host", "qemu-m7"], ["260k", "15m"])


def test_defaults_validate() -> None:
    values = validate({}, TABLE)
    assert values["target"] == "host"
    assert values["model"] == "260k"
    assert values["quant"] == "fp32"
    assert values["group_size"] == 32
    assert values["steps"] == 256
    assert values["temperature"] == 1.0


def test_unknown_option_names_the_known_ones() -> None:
    with pytest.raises(OptionError) as info:
        check_unknown(["quantt"], TABLE)
    message = str(info.value)
    assert "quantt" in message
    for name in ("target", "model", "quant", "group_size", "prompt", "steps", "temperature", "topp", "seed"):
        assert name in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("quant", "q3", "fp32, q8, q4"),
        ("target", "esp32", "host, qemu-m7"),
        ("group_size", "48", "32"),
        ("steps", "-1", "between 0"),
        ("temperature", "hot", "0.0..100"),
        ("topp", "1.5", "between 0.0 and 1.0"),
        ("seed", "0", "1..2^64-1"),
    ],
)
def test_bad_values_name_the_allowed_ones(name: str, value: str, expected: str) -> None:
    with pytest.raises(OptionError) as info:
        validate({name: value}, TABLE)
    assert name in str(info.value)
    assert expected in str(info.value)


def test_conversions() -> None:
    values = validate({"steps": "0x10", "temperature": "0.5", "seed": "18446744073709551615"}, TABLE)
    assert values["steps"] == 16
    assert values["temperature"] == 0.5
    assert values["seed"] == 2**64 - 1


def test_help_lists_defaults_and_allowed_values() -> None:
    text = help_text(TABLE)
    assert "quant" in text and "fp32|q8|q4" in text
    assert "default: '260k'" in text and "15m|260k|PATH" in text
