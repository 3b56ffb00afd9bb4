"""The Jinja2 environment for every generated file (templates in site_scons/llmcu/builder/templates/).

A template that is missing, does not parse, or uses a name the generator does not pass is a
:class:`TemplateError` naming the template and the line, so the build stops with one message instead of a
Jinja traceback (the SCons glue reports LlmcuErrors as ``llmcu: error: ...``).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import jinja2

from ..core.errors import LlmcuError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


class TemplateError(LlmcuError):
    """A generator template is missing or broken."""


def _template_line(template: jinja2.Template) -> int | None:
    """The template line being rendered when the current exception was raised (Jinja maps its frames)."""
    traceback = sys.exc_info()[2]
    line = None
    while traceback is not None:
        if template.filename and traceback.tb_frame.f_code.co_filename == template.filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


class _Template(jinja2.Template):
    def render(self, *args: Any, **kwargs: Any) -> str:
        try:
            return super().render(*args, **kwargs)
        except jinja2.TemplateError as error:
            line = _template_line(self)
            where = f"{self.filename}:{line}" if line else str(self.filename)
            raise TemplateError(f"{where}: template error: {error.message or error}") from None


class _Environment(jinja2.Environment):
    template_class = _Template

    def get_template(self, name: Any, *args: Any, **kwargs: Any) -> jinja2.Template:
        try:
            return super().get_template(name, *args, **kwargs)
        except jinja2.TemplateNotFound:
            raise TemplateError(
                f"template {name} not found in {TEMPLATES_DIR}: the llmcu checkout is incomplete (restore it, "
                f"e.g. git checkout -- site_scons/llmcu/builder/templates/{name})"
            ) from None
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(
                f"{error.filename or name}:{error.lineno}: template syntax error: {error.message}"
            ) from None


@functools.cache
def environment() -> jinja2.Environment:
    """Strict (an undefined name is an error, not an empty string), with block whitespace trimmed."""
    return _Environment(
        loader=jinja2.PackageLoader("llmcu.builder", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **values: object) -> str:
    return environment().get_template(template).render(**values)
