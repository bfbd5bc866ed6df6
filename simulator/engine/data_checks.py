"""Check one line of DATA text (after `354`): headers, the blank line, dot-stuffing, the final dot.

The server does not parse the message (it stores what arrives), so almost everything here is a
warning or advice; only the final `.` can be refused (message over the size limit, a scripted
fault). Line lengths follow RFC 5321 4.5.3.1.6 (1000 octets with CRLF) and RFC 5322 2.1.1.
"""

from __future__ import annotations

import re
from typing import Any

from mailprotocol.persona_rules import declared_8bit

from .knowledge import message
from .replies import looks_like_command

#: RFC 5322 2.2: a header field name is printable ASCII except the colon.
_HEADER = re.compile(r"^[\x21-\x39\x3b-\x7e]+:")
_HEADER_SPACED = re.compile(r"^[\x21-\x39\x3b-\x7e]+[ \t]+:")
#: RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
MAX_TEXT_LINE = 1000


def check_data_line(check: Any) -> None:
    """Diagnostics for one line typed while the server is reading message text."""
    session = check.session
    line: str = check.line
    lines: list[str] = session.message_lines
    if line == ".":
        end_of_data(check, lines)
        return
    in_headers = "" not in lines
    if line.startswith("."):
        if line.startswith(".."):
            check.add("data-dot-stuffed", "info", kept=line[1:])
        else:
            check.add("data-leading-dot", "warning", suggestion="." + line, kept=line[1:])
    octets = len(line.encode("utf-8", "surrogateescape")) + 2
    if octets > MAX_TEXT_LINE:
        check.add("data-line-too-long", "warning", length=octets, limit=MAX_TEXT_LINE)
    if "\r" in line or "\n" in line:
        check.add("data-bare-line-break", "warning")
    if not line.isascii() and not declared_8bit(session.mail_params):
        policy = check.profile.policies.undeclared_8bit
        verdict = message(f"eight_bit.{policy}", check.lang)
        check.add("data-8bit", "warning" if policy == "refuse" else "info", verdict=verdict)
    if looks_like_command(line) and not _HEADER.match(line):
        check.add("data-looks-like-command", "warning")
    elif in_headers:
        header_line(check, line, lines)
    projected = estimated_size(lines) + octets
    limit = check.profile.policies.max_message_size
    if limit and projected > limit >= estimated_size(lines):
        check.add("data-size-over", "warning", limit=limit)


def header_line(check: Any, line: str, lines: list[str]) -> None:
    if line == "":
        if not lines:
            check.add("data-no-headers", "warning")
        else:
            check.add("data-blank-line", "info")
        return
    if line[0] in " \t":
        if not lines:
            check.add("data-continuation-first", "warning")
        return
    if _HEADER.match(line):
        name = line.partition(":")[0]
        if name.lower() in {n.partition(":")[0].strip().lower() for n in lines if _HEADER.match(n)} and name.lower() in _ONCE:
            check.add("data-header-repeated", "warning", name=name)
        return
    if _HEADER_SPACED.match(line):
        name = line.partition(":")[0].rstrip()
        check.add("data-header-space-before-colon", "warning", suggestion=f"{name}:{line.partition(':')[2]}", name=name)
        return
    check.add("data-header-no-colon", "warning", suggestion="")


#: RFC 5322 3.6: fields that may appear at most once.
_ONCE = {"from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to", "references"}


def estimated_size(lines: list[str]) -> int:
    """Octets the server has counted so far (lines as sent, CRLF included)."""
    return sum(len(text.encode("utf-8", "surrogateescape")) + 2 + (1 if text.startswith(".") else 0) for text in lines)


def end_of_data(check: Any, lines: list[str]) -> None:
    """The core answers the final "." (its reply is the check's prediction); a fault may step in."""
    stored = sum(len(text.encode("utf-8", "surrogateescape")) + 2 for text in lines)
    check.decision = decision = check.end_of_message(check.state, stored)
    if decision.reason == "size-exceeded":
        check.add("data-size-exceeded", "error", size=estimated_size(lines), limit=check.profile.policies.max_message_size)
        return
    action = check.fault("DATA-END")
    if action is not None and check.apply_fault(action, "."):
        return
    if decision.reason == "undeclared-8bit":
        check.add("data-8bit-refused", "error")
        return
    headers = {line.partition(":")[0].strip().lower() for line in _header_block(lines) if _HEADER.match(line)}
    missing = [name for name in ("From", "Date") if name.lower() not in headers]
    if not lines:
        check.add("data-empty-message", "warning")
    elif missing:
        check.add("data-missing-headers", "warning", names=missing)
    check.add("data-end", "info")


def _header_block(lines: list[str]) -> list[str]:
    if "" in lines:
        return lines[: lines.index("")]
    return lines
