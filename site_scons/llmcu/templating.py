"""The Jinja2 environment for every generated file (templates in site_scons/llmcu/templates/)."""

from __future__ import annotations

import functools

import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    """Strict (an undefined name is an error, not an empty string), with block whitespace trimmed."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("llmcu", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **values: object) -> str:
    return environment().get_template(template).render(**values)
