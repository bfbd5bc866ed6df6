"""MAIL/RCPT parameter decisions and DATA un-stuffing: pure functions the server and the validator share.

No Twisted imports: `mockservers.smtp` calls these to decide its replies, and the simulator's
validator (`simulator.engine.validate`) calls the very same functions to predict them.
"""

from __future__ import annotations

import re
from typing import Any

from . import codec

_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}


def mail_parameter_problem(
    key: str, value: str | None, extensions: frozenset[str], max_size: int
) -> tuple[str, dict[str, Any]] | None:
    """The reply key (and values) a MAIL parameter earns, or None when it is fine."""
    option = f"{key}={value}" if value is not None else key
    if key == "SIZE" and "SIZE" in extensions:
        if value is None or not value.isdigit() or len(value) > 20:
            return "bad_parameter", {"parameter": "SIZE"}
        if max_size and int(value) > max_size:
            return "size_exceeded_declared", {"size": value}
        return None
    if key == "BODY" and "8BITMIME" in extensions:
        if value is None or value.upper() not in ("7BIT", "8BITMIME"):
            return ("bad_parameter", {"parameter": "BODY"}) if value is None or value.upper() != "BINARYMIME" else (
                "unsupported_option",
                {"option": option},
            )
        return None
    if key == "SMTPUTF8" and "SMTPUTF8" in extensions:
        return None if value is None else ("bad_parameter", {"parameter": "SMTPUTF8"})
    if key == "RET" and "DSN" in extensions:
        return None if value is not None and value.upper() in ("FULL", "HDRS") else ("bad_parameter", {"parameter": "RET"})
    if key == "ENVID" and "DSN" in extensions:
        ok = value is not None and 0 < len(value) <= 100 and codec.is_xtext(value)
        return None if ok else ("bad_parameter", {"parameter": "ENVID"})
    if key == "AUTH" and "AUTH" in extensions:
        if value is None or not codec.is_xtext(value):
            return "bad_parameter", {"parameter": "AUTH"}
        return None
    return "unsupported_option", {"option": option}


def rcpt_parameter_problem(key: str, value: str | None, extensions: frozenset[str]) -> tuple[str, dict[str, Any]] | None:
    """The reply key (and values) an RCPT parameter earns, or None when it is fine."""
    option = f"{key}={value}" if value is not None else key
    if key == "NOTIFY" and "DSN" in extensions:
        items = [v.upper() for v in (value or "").split(",")]
        if not value or (items != ["NEVER"] and (not set(items) <= _NOTIFY or len(set(items)) != len(items))):
            return "bad_parameter", {"parameter": "NOTIFY"}
        return None
    if key == "ORCPT" and "DSN" in extensions:
        addr_type, sep, xtext = (value or "").partition(";")
        if not sep or not re.fullmatch(r"[A-Za-z0-9\-]+", addr_type) or not xtext or not codec.is_xtext(xtext):
            return "bad_parameter", {"parameter": "ORCPT"}
        return None
    return "unsupported_option", {"option": option}


def unstuff(content: bytes) -> bytes:
    """Undo dot-stuffing exactly once (RFC 5321 4.5.2), then normalise bare CR/LF to CRLF.

    Only a dot after a real CRLF was stuffed; a `.` after a bare LF is data (SMTP smuggling).
    """
    if content.startswith(b".") or b"\r\n." in content:
        content = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]
    crlf = content.count(b"\r\n")
    if (crlf != content.count(b"\n") or crlf != content.count(b"\r")) and _BARE_LINE_END.search(content):
        content = re.sub(rb"\r\n|\r|\n", b"\r\n", content)  # counting first: C speed, no regex scan
    return content


_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
