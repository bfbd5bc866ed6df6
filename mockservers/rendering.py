"""Reply templates to wire lines: the one place a persona's text becomes bytes a client reads.

Templates are data from a profile (or a lesson's overrides), so formatting is restricted: plain
placeholder names only, bounded field widths, control characters replaced.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Any, Mapping

_REPLY_LINE = re.compile(r"^(?P<code>[2-5]\d\d)(?P<sep>[ -]?)(?P<text>.*)$", re.DOTALL)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")


#: Control characters never leave in a reply: a value echoed from the client (an address, a VRFY
#: argument) may carry a bare CR or ESC, which would split or rewrite the line on the learner's side.
_REPLY_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Widest field a reply template may ask for (`{size:>9999999999}` would allocate gigabytes).
_MAX_FIELD_WIDTH = 256


class _Template(string.Formatter):
    """str.format for reply templates: data only.

    Unknown placeholders stay visible instead of raising. A placeholder is a plain name: attribute
    and index lookups (`{host.__class__}`) are left as literal text, never evaluated, so a profile
    or a lesson's `profile_overrides` cannot walk Python objects; a format spec wider than
    _MAX_FIELD_WIDTH is ignored; control characters in substituted values become `?`.
    """

    def get_value(self, key: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        return "{" + str(key) + "}"

    def get_field(self, field_name: str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if not field_name.isidentifier():
            return "{" + field_name + "}", field_name
        return self.get_value(field_name, args, kwargs), field_name

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return value  # no !r / !s / !a: a template shows values, it does not inspect them

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec and any(int(n) > _MAX_FIELD_WIDTH for n in re.findall(r"\d+", format_spec)):
            format_spec = ""
        try:
            text = format(value, format_spec)
        except (ValueError, TypeError):
            text = str(value)
        return _REPLY_CONTROL.sub("?", text)


_FORMATTER = _Template()


@functools.lru_cache(maxsize=2048)
def _parsed(template: str) -> tuple[tuple[str, str | None, str], ...] | None:
    """`template` as (literal, placeholder, format spec) parts, parsed once: a reply is rendered on
    every command. None when the template needs `_Template.vformat` itself (a nested or odd field)."""
    parts: list[tuple[str, str | None, str]] = []
    try:
        for literal, name, spec, _conversion in _FORMATTER.parse(template):
            if name is not None and (not name.isidentifier() or "{" in (spec or "") or "}" in (spec or "")):
                return None
            parts.append((literal, name, spec or ""))
    except ValueError:
        return None
    return tuple(parts)


def _format(template: str, values: Mapping[str, Any]) -> str:
    """`_FORMATTER.vformat(template, (), values)`, the same text, without re-parsing the template."""
    parts = _parsed(template)
    if parts is None:
        return _FORMATTER.vformat(template, (), values)
    out = []
    for literal, name, spec in parts:
        out.append(literal)
        if name is not None:
            out.append(_FORMATTER.format_field(_FORMATTER.get_value(name, (), values), spec))
    return "".join(out)


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in _FORMATTER.parse(template) if name]


def render_smtp(template_lines: tuple[str, ...], values: Mapping[str, Any]) -> list[str]:
    """Render a reply template to wire lines with correct `250-`/`250 ` continuation."""
    out: list[str] = []
    last = len(template_lines) - 1
    for index, template in enumerate(template_lines):
        text = _format(template, values) if "{" in template else template
        match = _REPLY_LINE.match(text)
        assert match is not None, text  # checked at load time
        sep = " " if index == last else "-"
        out.append(f"{match['code']}{sep}{match['text']}")
    return out


def render_pop3(template_lines: tuple[str, ...], values: Mapping[str, Any]) -> list[str]:
    """Render a POP3 status line (single line by RFC 1939)."""
    return [_format(t, values) if "{" in t else t for t in template_lines]




def format_template(template: str, values: Mapping[str, Any]) -> str:
    """One template line with `values` filled in (unknown placeholders stay visible)."""
    return _format(template, values)


def strip_enhanced(line: str) -> str:
    """Drop an RFC 3463 code: servers that do not advertise ENHANCEDSTATUSCODES must not send one."""
    if len(line) > 4 and _ENHANCED.match(line[4:]):
        return line[:4] + _ENHANCED.sub("", line[4:], count=1)
    return line
