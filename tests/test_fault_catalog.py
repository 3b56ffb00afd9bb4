"""tests/FAULTS.md lists every fault mark of the suite, and the catalogue reader rejects malformed marks."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import faultcatalog


def test_document_is_up_to_date() -> None:
    expected = faultcatalog.render(faultcatalog.all_cases())
    assert faultcatalog.DOCUMENT.read_text() == expected, "run: python3 tests/support/faultcatalog.py --write"


def test_marks_are_read_from_decorators_and_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faultcatalog, "TESTS", tmp_path)
    source = tmp_path / "test_example.py"
    source.write_text(
        "import pytest\n"
        "@pytest.mark.fault(area='uart', kind='fault', what='peer stalls', sees='silent for')\n"
        "def test_a(sees): pass\n"
        "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.fault(area='checkpoint', kind='input',"
        " what='cut', sees='truncated'))])\n"
        "def test_b(x, sees): pass\n"
    )
    cases = faultcatalog.cases_in(source)
    assert [(c.area, c.what, c.test.split("::")[1]) for c in cases] == [
        ("uart", "peer stalls", "test_a"),
        ("checkpoint", "cut", "test_b"),
    ]
    text = faultcatalog.render(cases)
    assert "1 bad inputs, 1 injected faults" in text and "| fault | peer stalls | `silent for` |" in text


@pytest.mark.parametrize(
    "mark, message",
    [
        ("area='nowhere', kind='input', what='x', sees='y'", "unknown area"),
        ("area='uart', kind='bug', what='x', sees='y'", "kind must be"),
        ("area='uart', kind='input', what='x'", "needs sees"),
        ("area='uart', kind='input', what=str(1), sees='y'", "string literals"),
    ],
)
def test_malformed_marks_are_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mark: str, message: str) -> None:
    monkeypatch.setattr(faultcatalog, "TESTS", tmp_path)
    source = tmp_path / "test_bad.py"
    source.write_text(f"import pytest\n@pytest.mark.fault({mark})\ndef test_x(sees): pass\n")
    with pytest.raises(ValueError, match=message):
        faultcatalog.cases_in(source)


def test_sees_fixture_fails_a_case_that_does_not_check(pytester: pytest.Pytester) -> None:
    here = str(Path(__file__).parent)
    pytester.makeconftest(f"import sys\nsys.path.insert(0, {here!r})\npytest_plugins = ['support.faultcatalog']\n")
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.fault(area='uart', kind='fault', what='w', sees='silent for [0-9]+ s')\n"
        "def test_checks(sees): sees('UART silent for 5 s')\n"
        "@pytest.mark.fault(area='uart', kind='fault', what='w', sees='silent')\n"
        "def test_forgets(sees): pass\n"
        "@pytest.mark.fault(area='uart', kind='fault', what='w', sees='silent')\n"
        "def test_wrong_message(sees): sees('all fine')\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1, failed=1)
