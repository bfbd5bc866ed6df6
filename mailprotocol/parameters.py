"""MAIL/RCPT parameter decisions and DATA un-stuffing: pure functions the server and the validator share.

No Twisted imports: `mockservers.smtp` calls these to decide its replies, and the simulator's
validator (`simulator.engine.validate`) calls the very same functions to predict them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from . import codec

_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}

#: The EHLO keyword that brings each MAIL/RCPT parameter (RFC 1870, 6152, 6531, 3461, 4954).
EXTENSION_OF: dict[str, str] = {
    "SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8", "RET": "DSN", "ENVID": "DSN",
    "AUTH": "AUTH", "NOTIFY": "DSN", "ORCPT": "DSN",
}


class ParameterWhy(StrEnum):
    """Why a parameter is refused; the server answers by its reply key, a teacher by this."""

    SYNTAX = "syntax"  # a known parameter with a bad value (501 bad_parameter)
    SIZE_EXCEEDED = "size-exceeded"  # SIZE= over the persona's limit (RFC 1870 6.1)
    BINARYMIME = "binarymime"  # BODY=BINARYMIME without the BINARYMIME extension (RFC 3030)
    NOT_ADVERTISED = "not-advertised"  # a parameter of an extension this server does not offer now
    UNKNOWN = "unknown"  # a parameter no extension defines


@dataclass(frozen=True)
class ParameterProblem:
    """The first MAIL/RCPT parameter the server refuses: which one, why, and the reply it earns."""

    key: str
    value: str | None
    why: ParameterWhy
    reply: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def option(self) -> str:
        """The parameter as typed (`KEY=VALUE` or `KEY`), upper-cased key."""
        return f"{self.key}={self.value}" if self.value is not None else self.key

    @property
    def extension(self) -> str | None:
        return EXTENSION_OF.get(self.key)


def _syntax(key: str, value: str | None) -> ParameterProblem:
    return ParameterProblem(key, value, ParameterWhy.SYNTAX, "bad_parameter", {"parameter": key})


def _unsupported(key: str, value: str | None, extensions: frozenset[str]) -> ParameterProblem:
    option = f"{key}={value}" if value is not None else key
    if key == "BODY" and (value or "").upper() == "BINARYMIME":
        why = ParameterWhy.BINARYMIME
    elif EXTENSION_OF.get(key) not in (None, *extensions):
        why = ParameterWhy.NOT_ADVERTISED
    else:
        why = ParameterWhy.UNKNOWN
    return ParameterProblem(key, value, why, "unsupported_option", {"option": option})


def mail_parameter_problem(key: str, value: str | None, extensions: frozenset[str], max_size: int) -> ParameterProblem | None:
    """What a MAIL parameter earns, or None when it is fine."""
    if key == "SIZE" and "SIZE" in extensions:
        if value is None or not value.isdigit() or len(value) > 20:
            return _syntax(key, value)
        if max_size and int(value) > max_size:
            return ParameterProblem(key, value, ParameterWhy.SIZE_EXCEEDED, "size_exceeded_declared", {"size": value})
        return None
    if key == "BODY" and "8BITMIME" in extensions:
        if value is None or value.upper() not in ("7BIT", "8BITMIME"):
            return _syntax(key, value) if value is None or value.upper() != "BINARYMIME" else _unsupported(key, value, extensions)
        return None
    if key == "SMTPUTF8" and "SMTPUTF8" in extensions:
        return None if value is None else _syntax(key, value)
    if key == "RET" and "DSN" in extensions:
        return None if value is not None and value.upper() in ("FULL", "HDRS") else _syntax(key, value)
    if key == "ENVID" and "DSN" in extensions:
        ok = value is not None and 0 < len(value) <= 100 and codec.is_xtext(value)
        return None if ok else _syntax(key, value)
    if key == "AUTH" and "AUTH" in extensions:
        if value is None or not codec.is_xtext(value):
            return _syntax(key, value)
        return None
    return _unsupported(key, value, extensions)


def rcpt_parameter_problem(key: str, value: str | None, extensions: frozenset[str]) -> ParameterProblem | None:
    """What an RCPT parameter earns, or None when it is fine."""
    if key == "NOTIFY" and "DSN" in extensions:
        items = [v.upper() for v in (value or "").split(",")]
        if not value or (items != ["NEVER"] and (not set(items) <= _NOTIFY or len(set(items)) != len(items))):
            return _syntax(key, value)
        return None
    if key == "ORCPT" and "DSN" in extensions:
        addr_type, sep, xtext = (value or "").partition(";")
        if not sep or not re.fullmatch(r"[A-Za-z0-9\-]+", addr_type) or not xtext or not codec.is_xtext(xtext):
            return _syntax(key, value)
        return None
    return _unsupported(key, value, extensions)


def first_parameter_problem(
    verb: str, params: Mapping[str, str | None], extensions: frozenset[str], max_size: int = 0
) -> ParameterProblem | None:
    """The first parameter of a MAIL (`max_size`: the persona's limit) or RCPT the server refuses."""
    for key, value in params.items():
        problem = (
            mail_parameter_problem(key, value, extensions, max_size) if verb == "MAIL" else rcpt_parameter_problem(key, value, extensions)
        )
        if problem is not None:
            return problem
    return None


def unstuff(content: bytes) -> bytes:
    """Undo dot-stuffing exactly once (RFC 5321 4.5.2), then normalise bare CR/LF to CRLF.

    Only a dot after a real CRLF was stuffed; a `.` after a bare LF is data (SMTP smuggling).
    """
    if content.startswith(b".") or b"\r\n." in content:
        content = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]
    # Every CR starts a CRLF (a scan at memchr speed, as the pattern starts with a literal); then
    # the LFs are all in CRLFs exactly when there are as many as CRs. Counting the two-octet CRLF,
    # or one pattern for both bare endings, would cost two to forty times as much per MB.
    if _BARE_CR.search(content) is not None or content.count(b"\n") != content.count(b"\r"):
        content = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    return content


_BARE_CR = re.compile(rb"\r(?!\n)")
