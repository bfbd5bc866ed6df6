"""Lesson patterns: what a typed line must look like, and how a solution line is computed.

Patterns are literal text (case-insensitive, any run of spaces matches any run) with
placeholders:

  {domain}   a host name or address literal      {address}  a mailbox (user@example.com)
  {word}     one word                             {number}   digits
  {any}      anything (possibly nothing)          {base64}   any valid base64
  {base64:T} base64 that decodes to T             {plain:U:S}  the AUTH PLAIN payload of U and S

`$name` is a lesson variable (`$user`, `$secret`, `$to`, ... from front matter `vars` and the
accounts). Solutions use the same syntax plus values only known at run time:
`{cram:U:S}` (CRAM-MD5 answer to the last 334 challenge), `{apop:S}` (digest of the POP3 greeting
timestamp) and `{mime:T}` (T as an RFC 2047 encoded-word, for a non-ASCII `Subject:`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.header import Header
from typing import Callable, Mapping

from mailprotocol import codec as sasl
from mailprotocol.addresses import is_domain, is_mailbox

_PLACEHOLDER = re.compile(r"\{([a-z0-9]+)(?::([^{}]*))?\}")
_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

MATCH_PLACEHOLDERS = ("domain", "address", "word", "number", "any", "base64", "plain")
SOLUTION_PLACEHOLDERS = ("base64", "plain", "cram", "apop", "mime")


class PatternError(ValueError):
    """A pattern or solution line that cannot be used (unknown placeholder or variable)."""


def substitute_variables(text: str, variables: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise PatternError(f"unknown variable ${name} (known: {', '.join('$' + v for v in sorted(variables)) or 'none'})")
        return variables[name]

    return _VARIABLE.sub(value, text)


@dataclass(frozen=True)
class LinePattern:
    """A compiled `>` expectation."""

    source: str
    regex: re.Pattern[str]
    checks: tuple[tuple[str, Callable[[str], bool]], ...]

    def matches(self, line: str) -> bool:
        match = self.regex.fullmatch(line.strip())
        if not match:
            return False
        return all(check(match.group(group)) for group, check in self.checks)


def _b64_is(expected: bytes) -> Callable[[str], bool]:
    def check(token: str) -> bool:
        try:
            return base64.b64decode(token, validate=True) == expected
        except (binascii.Error, ValueError):
            return False

    return check


def compile_pattern(pattern: str, variables: Mapping[str, str]) -> LinePattern:
    """Turn `MAIL FROM:<$user>` or `AUTH PLAIN {plain:$user:$secret}` into a matcher."""
    text = substitute_variables(pattern.strip(), variables)
    parts: list[str] = []
    checks: list[tuple[str, Callable[[str], bool]]] = []
    position = 0
    for index, match in enumerate(_PLACEHOLDER.finditer(text)):
        parts.append(_literal(text[position : match.start()]))
        name, argument = match.group(1), match.group(2)
        group = f"p{index}"
        if name == "domain":
            parts.append(rf"(?P<{group}>\S+)")
            checks.append((group, lambda v: is_domain(v) or (v.startswith("[") and v.endswith("]"))))
        elif name == "address":
            parts.append(rf"(?P<{group}>[^\s<>]+)")
            checks.append((group, is_mailbox))
        elif name == "word":
            parts.append(rf"(?P<{group}>\S+)")
        elif name == "number":
            parts.append(rf"(?P<{group}>\d+)")
        elif name == "any":
            parts.append(rf"(?P<{group}>.*?)")
        elif name == "base64":
            parts.append(rf"(?P<{group}>[A-Za-z0-9+/]+={{0,2}})")
            if argument is not None:
                checks.append((group, _b64_is(argument.encode("utf-8"))))
            else:
                checks.append((group, lambda v: _b64_is_valid(v)))
        elif name == "plain":
            user, secret = _two(argument, "plain")
            parts.append(rf"(?P<{group}>[A-Za-z0-9+/]+={{0,2}})")
            checks.append((group, _plain_is(user, secret)))
        else:
            raise PatternError(f"unknown placeholder {{{name}}} (known: {', '.join('{' + p + '}' for p in MATCH_PLACEHOLDERS)})")
        position = match.end()
    parts.append(_literal(text[position:]))
    return LinePattern(pattern, re.compile("".join(parts), re.IGNORECASE | re.DOTALL), tuple(checks))


def _literal(text: str) -> str:
    pieces = re.split(r"(\s+)", text)
    return "".join(r"\s+" if piece.isspace() else re.escape(piece) for piece in pieces if piece)


def _b64_is_valid(token: str) -> bool:
    try:
        base64.b64decode(token, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def _plain_is(user: str, secret: str) -> Callable[[str], bool]:
    def check(token: str) -> bool:
        try:
            _, got_user, got_secret = sasl.parse_plain(base64.b64decode(token, validate=True))
        except (binascii.Error, ValueError):
            return False
        return got_user.lower() == user.lower() and got_secret == secret

    return check


def _two(argument: str | None, name: str) -> tuple[str, str]:
    if argument is None or argument.count(":") < 1:
        raise PatternError(f"{{{name}:USER:SECRET}} needs a user and a secret")
    user, _, secret = argument.partition(":")
    return user, secret


@dataclass
class RuntimeValues:
    """What a solution line may need from the live session."""

    last_challenge: bytes = b""
    apop_timestamp: str = ""


def render_solution(line: str, variables: Mapping[str, str], runtime: RuntimeValues | None = None) -> str:
    """The exact line a solution sends, with variables and computed values filled in."""
    text = substitute_variables(line, variables)
    runtime = runtime or RuntimeValues()

    def value(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name == "base64":
            return sasl.b64encode_text(argument or "")
        if name == "plain":
            return sasl.plain_payload(*_two(argument, "plain"))
        if name == "cram":
            user, secret = _two(argument, "cram")
            return sasl.cram_md5_response(user, secret, runtime.last_challenge)
        if name == "apop":
            return sasl.apop_digest(runtime.apop_timestamp, argument or "")
        if name == "mime":
            return encoded_word(argument or "")
        raise PatternError(f"{{{name}}} cannot be computed in a solution (known: {', '.join('{' + p + '}' for p in SOLUTION_PLACEHOLDERS)})")

    return _PLACEHOLDER.sub(value, text)


def encoded_word(text: str) -> str:
    """`text` as one RFC 2047 encoded-word (UTF-8, base64), computed by the stdlib `email` package."""
    return Header(text, "utf-8").encode(maxlinelen=0)


def check_solution_line(line: str, variables: Mapping[str, str]) -> None:
    """Raise PatternError if a solution line uses an unknown variable or placeholder."""
    text = substitute_variables(line, variables)
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) not in SOLUTION_PLACEHOLDERS:
            raise PatternError(f"unknown placeholder {{{match.group(1)}}} in a solution")
        if match.group(1) in ("plain", "cram"):
            _two(match.group(2), match.group(1))
