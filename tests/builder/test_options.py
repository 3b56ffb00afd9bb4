"""Build options: defaults, allowed values and errors, without SCons."""

from __future__ import annotations

import pytest

from llmcu.builder.options import build_options, check_unknown, help_text, validate
from llmcu.core.errors import OptionError

TABLE = build_options(["host", "qemu-m7"], ["260k", "15m"])


def test_defaults_validate() -> None:
    values = validate({}, TABLE)
    assert values["target"] == "host"
    assert values["model"] == "260k"
    assert values["quant"] == "fp32"
    assert values["group_size"] == 32
    assert values["steps"] == 256
    assert values["temperature"] == 1.0


@pytest.mark.fault(
    area="options",
    kind="input",
    what="a misspelt option name (quantt=)",
    sees=r"unknown option quantt.*target.*quant.*group_size",
)
def test_unknown_option_names_the_known_ones(sees) -> None:
    with pytest.raises(OptionError) as info:
        check_unknown(["quantt"], TABLE)
    message = str(info.value)
    sees(message)
    assert "quantt" in message
    for name in ("target", "model", "quant", "group_size", "prompt", "steps", "temperature", "topp", "seed"):
        assert name in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        pytest.param(
            "quant",
            "q3",
            "fp32, q8, q4",
            marks=pytest.mark.fault(
                area="options", kind="input", what="quant=q3 (no such quantization)", sees=r"quant.*q3.*fp32, q8, q4"
            ),
        ),
        pytest.param(
            "target",
            "esp32",
            "host, qemu-m7",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="target=esp32 (no such target folder)",
                sees=r"target.*esp32.*host, qemu-m7",
            ),
        ),
        pytest.param(
            "group_size",
            "48",
            "32",
            marks=pytest.mark.fault(
                area="options", kind="input", what="group_size=48 (not a power of two)", sees=r"group_size.*48.*32"
            ),
        ),
        pytest.param(
            "steps",
            "-1",
            "between 0",
            marks=pytest.mark.fault(area="options", kind="input", what="steps=-1 (negative)", sees=r"steps.*between 0"),
        ),
        pytest.param(
            "temperature",
            "hot",
            "0.0..100",
            marks=pytest.mark.fault(
                area="options", kind="input", what="temperature=hot (not a number)", sees=r"temperature.*0\.0\.\.100"
            ),
        ),
        pytest.param(
            "topp",
            "1.5",
            "between 0.0 and 1.0",
            marks=pytest.mark.fault(
                area="options", kind="input", what="topp=1.5 (above 1)", sees=r"topp.*between 0\.0 and 1\.0"
            ),
        ),
        pytest.param(
            "seed",
            "0",
            "1..2^64-1",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="seed=0 (the sampler needs a non-zero seed)",
                sees=r"seed.*1\.\.2\^64-1",
            ),
        ),
        pytest.param(
            "kernels",
            "fast",
            "opt",
            marks=pytest.mark.fault(
                area="options", kind="input", what="kernels=fast (neither opt nor ref)", sees=r"kernels.*fast.*opt.*ref"
            ),
        ),
        pytest.param(
            "kv_type",
            "f8",
            "f16",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="kv_type=f8 (no such KV cache type)",
                sees=r"kv_type.*f8.*auto.*f32.*f16.*q8",
            ),
        ),
        pytest.param(
            "seq_len",
            "-5",
            "seq_len",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="seq_len=-5 (negative context length)",
                sees=r"seq_len=.-5. is not valid \(must be between 0 and",
            ),
        ),
    ],
)
def test_bad_values_name_the_allowed_ones(name: str, value: str, expected: str, sees) -> None:
    with pytest.raises(OptionError) as info:
        validate({name: value}, TABLE)
    assert name in str(info.value)
    assert expected in str(info.value)
    sees(str(info.value))


def test_conversions() -> None:
    values = validate({"steps": "0x10", "temperature": "0.5", "seed": "18446744073709551615"}, TABLE)
    assert values["steps"] == 16
    assert values["temperature"] == 0.5
    assert values["seed"] == 2**64 - 1


def test_help_lists_defaults_and_allowed_values() -> None:
    text = help_text(TABLE)
    assert "quant" in text and "fp32|q8|q4" in text
    assert "default: '260k'" in text and "15m|260k|PATH" in text


def test_a_misspelling_gets_the_nearest_name_or_value() -> None:
    with pytest.raises(OptionError, match=r"unknown option qaunt; did you mean quant\?"):
        check_unknown(["qaunt"], TABLE)
    with pytest.raises(OptionError, match=r"quant='q4zz' is not allowed; choose one of: .* \(did you mean q4z\?\)"):
        validate({"quant": "q4zz"}, TABLE)


@pytest.mark.fault(
    area="options",
    kind="input",
    what="a value outside an option's allowed ones on the scons command line (quant=q3, target=esp32)",
    sees=r"^llmcu: error: quant='q3' is not allowed; choose one of: fp32, q8, q4, q4z, auto$",
)
def test_scons_prints_one_llmcu_error_line_for_a_bad_value(tmp_path, stories260k, sees) -> None:
    """Not SCons's enum message and a traceback line into the glue: the same one line as every other error."""
    from support.build import scons

    for args, line in ((["quant=q3"], "quant='q3' is not allowed"), (["target=esp32"], "target='esp32' is not allowed"),
                       (["group_size=3"], "group_size='3' is not allowed")):  # fmt: skip
        result = scons(["model=260k", f"build_dir={tmp_path}", *args], stories260k.parent, check=False)
        assert result.returncode == 2
        errors = [text for text in result.stderr.splitlines() if text.strip()]
        assert len(errors) == 1 and errors[0].startswith(f"llmcu: error: {line}"), result.stderr
        assert "site_tools" not in result.stderr and "Invalid value for enum" not in result.stderr
        if args == ["quant=q3"]:
            sees(errors[0])


@pytest.mark.fault(
    area="options",
    kind="input",
    what="an option for another kind of target (board= or probe= on the host, stack= or power= on Linux)",
    sees=r"^llmcu: error: board= does not apply to target host \(a hosted target\); it applies to .*stm32h743",
)
def test_an_option_that_does_not_apply_is_an_error_naming_where_it_does(tmp_path, stories260k, sees) -> None:
    """Nothing is silently ignored: a non-default value for an option another kind of target takes is one error
    line naming those targets; its default value (hil=none on the host, from a shared script) is fine."""
    from support.build import scons

    cases = (
        (["board=nucleo-h743zi"], "board= does not apply to target host (a hosted target); it applies to qemu-m7, "
         "rzv2l, stm32h743"),
        (["power=estimate"], "power= does not apply to target host (a hosted target); it applies to qemu-m7, "
         "stm32h743"),
        (["probe=066DFF48"], "probe= does not apply to target host (a hosted target); it applies to qemu-m7, "
         "stm32h743"),
        (["target=rzv2l", "stack=16K"], "stack= does not apply to target rzv2l (a linux target); it applies to "
         "qemu-m7, stm32h743"),
        (["target=rzv2l", "power=ppk2"], "power= does not apply to target rzv2l (a linux target); it applies to "
         "qemu-m7, stm32h743"),
    )  # fmt: skip
    for args, line in cases:
        result = scons(["model=260k", f"build_dir={tmp_path}", *args], stories260k.parent, check=False)
        errors = [text for text in result.stderr.splitlines() if text.strip()]
        assert result.returncode == 2 and errors == [f"llmcu: error: {line}"], result.stderr
        if args == ["board=nucleo-h743zi"]:
            sees(errors[0])
    assert "[baremetal targets]" in next(o.full_help for o in TABLE if o.name == "watchdog")


def test_scons_help_lists_the_aliases_and_the_options(tmp_path, stories260k) -> None:
    from support.build import scons

    text = scons(["-h"], stories260k.parent).stdout
    for alias in ("run", "console", "monitor", "debug", "flash", "compiledb"):
        assert f"scons [options] {alias}" in text, alias
    assert "power:" in text and "[baremetal targets]" in text


def test_docs_options_is_the_option_table() -> None:
    """docs/options.md is generated from the table (tools/options_doc.py) and lists every option once."""
    from llmcu.builder.options import markdown_table
    from llmcu.builder.settings import options_table
    from support.build import ROOT

    table = options_table()
    text = markdown_table(table)
    assert (ROOT / "docs" / "options.md").read_text() == text, "docs/options.md is stale: run tools/options_doc.py"
    assert [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")] == [o.name for o in table]
