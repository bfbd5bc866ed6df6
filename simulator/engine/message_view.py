"""What the message inspector shows, computed without any UI: headers, the Received chain as a
timeline, the MIME tree, each part decoded, authentication results, the raw source.

Parsing uses the standard library's `email` package with `policy.default` (RFC 2047 words such
as a GBK or UTF-8 Chinese subject are decoded by it; RFC 2231 file names too). Classroom input is
untrusted, so everything is bounded: at most MAX_BYTES of a message are parsed, at most MAX_PARTS
parts are listed, MAX_DEPTH levels of nesting are followed, and a decoded part shows at most
MAX_SHOWN characters.
"""

from __future__ import annotations

import email
import email.utils
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any

MAX_BYTES = 4 * 1024 * 1024
MAX_PARTS = 200
MAX_DEPTH = 12
MAX_SHOWN = 20_000


@dataclass(frozen=True)
class Hop:
    """One `Received:` line (RFC 5321 4.4), oldest hop first in a timeline."""

    sender: str  # the "from" clause: HELO name and address
    receiver: str  # the "by" host
    protocol: str  # the "with" value: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (RFC 3848)
    date: str
    tls: bool  # RFC 3848: an S after ESMTP means TLS
    authenticated: bool  # ...and an A means SMTP AUTH


@dataclass(frozen=True)
class Part:
    """One node of the MIME tree."""

    path: str  # "1", "1.2", ... ("" for the message itself)
    depth: int
    content_type: str
    charset: str
    encoding: str  # Content-Transfer-Encoding: 7bit, base64, quoted-printable...
    filename: str
    is_attachment: bool
    size: int  # octets of the decoded body (0 for multiparts)
    message: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class MessageView:
    """Everything the inspector shows about one message."""

    headers: list[tuple[str, str]]  # decoded values, in order
    hops: list[Hop]
    parts: list[Part]
    auth_results: list[tuple[str, str]]  # (method, result and properties), from Authentication-Results
    raw: str
    truncated: bool  # the message was longer than MAX_BYTES
    parts_truncated: bool  # more than MAX_PARTS parts, or deeper than MAX_DEPTH

    @property
    def subject(self) -> str:
        return next((value for name, value in self.headers if name.lower() == "subject"), "")


_WITH = re.compile(r"\bwith\s+([A-Za-z0-9-]+)", re.I)
_FROM = re.compile(r"^\s*from\s+(.+?)\s+(?=by\s)", re.I | re.S)
_BY = re.compile(r"\bby\s+(\S+)", re.I)


def parse_received(value: str) -> Hop:
    """The parts of a Received line a learner reads: from, by, with, date (after the last `;`)."""
    text = " ".join(value.split())
    trace, _, date = text.rpartition(";")
    if not trace:
        trace, date = text, ""
    sender = _FROM.search(trace)
    receiver = _BY.search(trace)
    with_ = _WITH.search(trace)
    protocol = with_.group(1).upper() if with_ else ""
    return Hop(
        sender=sender.group(1) if sender else "",
        receiver=receiver.group(1) if receiver else "",
        protocol=protocol,
        date=date.strip(),
        tls=protocol.startswith(("ESMTPS", "UTF8SMTPS", "LMTPS")) or "TLS" in trace.upper(),
        authenticated=protocol.endswith("A"),
    )


def parse_auth_results(value: str) -> list[tuple[str, str]]:
    """`host; spf=pass smtp.mailfrom=x; dkim=pass header.d=y` -> [("spf", "pass smtp.mailfrom=x"), ...]."""
    clauses = [c.strip() for c in " ".join(value.split()).split(";")]
    found = []
    for clause in clauses[1:]:
        method, _, rest = clause.partition("=")
        if method and rest:
            found.append((method.strip().lower(), rest.strip()))
    return found


def _walk(message: EmailMessage, path: str, depth: int, parts: list[Part]) -> bool:
    """Depth-first MIME tree; False when a bound was reached."""
    if len(parts) >= MAX_PARTS or depth > MAX_DEPTH:
        return False
    is_multipart = message.is_multipart()
    payload = b"" if is_multipart else message.get_payload(decode=True) or b""
    parts.append(
        Part(
            path=path,
            depth=depth,
            content_type=message.get_content_type(),
            charset=message.get_content_charset() or "",
            encoding=str(message.get("Content-Transfer-Encoding", "7bit")).lower(),
            filename=message.get_filename() or "",
            is_attachment=message.get_content_disposition() == "attachment",
            size=len(payload),
            message=message,
        )
    )
    if not is_multipart:
        return True
    complete = True
    for number, child in enumerate(message.iter_parts(), start=1):
        child_path = f"{path}.{number}" if path else str(number)
        if not _walk(child, child_path, depth + 1, parts):
            complete = False
            break
    return complete


def too_deep(data: bytes) -> bool:
    """More multipart boundaries than the walk would ever show: the stdlib parser recurses once
    per nesting level, so a hostile message 1,000 levels deep would raise RecursionError."""
    return data.lower().count(b"boundary=") > MAX_PARTS


def parse_headers(raw: bytes) -> EmailMessage:
    """The header section only (no MIME walk at all, however the body is built), RFC 2047 decoded.

    For checks that only need Subject or a header (lesson steps, grading): a hostile body can
    neither make them slow nor make them fail.
    """
    head = re.split(rb"\r?\n\r?\n", raw[:MAX_BYTES], maxsplit=1)[0]
    return BytesHeaderParser(policy=policy.default).parsebytes(head + b"\r\n\r\n")  # type: ignore[return-value]


def view_message(raw: bytes) -> MessageView:
    """Parse one message (bounded) for the inspector."""
    truncated = len(raw) > MAX_BYTES
    data = raw[:MAX_BYTES]
    if too_deep(data):
        message = parse_headers(data)  # the headers, and the parts list says it stopped
    else:
        message = email.message_from_bytes(data, policy=policy.default)  # type: ignore[assignment]
    headers = []
    for name, value in message.items():
        try:
            headers.append((name, str(value)))
        except Exception:  # noqa: BLE001 - a malformed header is shown as it came
            headers.append((name, str(message.get_all(name, [""])[0])))
    hops = [parse_received(v) for n, v in headers if n.lower() == "received"]
    hops.reverse()  # the bottom Received is the first hop
    auth = []
    for name, value in headers:
        if name.lower() == "authentication-results":
            auth += parse_auth_results(value)
    parts: list[Part] = []
    complete = _walk(message, "", 0, parts) and not too_deep(data)
    return MessageView(
        headers=headers,
        hops=hops,
        parts=parts,
        auth_results=auth,
        raw=data.decode("utf-8", "replace"),
        truncated=truncated,
        parts_truncated=not complete,
    )


def decode_part(part: Part) -> str:
    """A part as a learner should read it: text decoded from its transfer encoding and charset
    (GBK, UTF-8...), a nested message or multipart as its headers, anything else as its size."""
    message = part.message
    if part.content_type.startswith("multipart/"):
        return f"{part.content_type}: {sum(1 for _ in message.iter_parts())} parts"
    if part.content_type.startswith("text/") and not part.is_attachment:
        try:
            text = message.get_content()
        except (LookupError, UnicodeDecodeError):
            payload = message.get_payload(decode=True) or b""
            text = payload.decode("utf-8", "replace")
        return text[:MAX_SHOWN] + ("\n[...]" if len(text) > MAX_SHOWN else "")
    if part.content_type in ("message/rfc822", "message/delivery-status") or part.content_type.startswith("message/"):
        payload = message.get_payload()
        if isinstance(payload, list):
            blocks = []
            for block in payload[:MAX_PARTS]:
                blocks.append("\n".join(f"{k}: {v}" for k, v in block.items()))
            return "\n\n".join(blocks)[:MAX_SHOWN]
        return str(payload)[:MAX_SHOWN]
    name = f" {part.filename}" if part.filename else ""
    return f"[{part.content_type}{name}: {part.size} octets]"


def envelope_sender(raw: bytes) -> str:
    """The `Return-Path:` a final delivery wrote (RFC 5321 4.4), without brackets, lower case;
    "" for a bounce (`<>`) or a message that has none."""
    value = str(parse_headers(raw).get("Return-Path", "") or "")
    return value.strip().strip("<>").strip().lower()


def hop_count(raw: bytes) -> int:
    """How many `Received:` lines a message carries: one per server it passed (RFC 5321 4.4)."""
    return len(parse_headers(raw).get_all("Received", []))


def bounced_recipients(raw: bytes) -> list[str] | None:
    """The recipients a delivery status notification reports as failed (RFC 3464 2.3:
    `Final-Recipient: rfc822; x@y` with `Action: failed`), lower case; None when the message is no
    `multipart/report; report-type=delivery-status` (RFC 6522). Bounded like the inspector."""
    head = parse_headers(raw)
    content_type = head.get_content_type()
    if content_type != "multipart/report" or str(head.get_param("report-type", "")).lower() != "delivery-status":
        return None
    data = raw[:MAX_BYTES]
    if too_deep(data):
        return []
    message = email.message_from_bytes(data, policy=policy.default)
    failed: list[str] = []
    for index, part in enumerate(message.walk()):
        if index >= MAX_PARTS:
            break
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        for block in blocks if isinstance(blocks, list) else []:
            recipient = str(block.get("Final-Recipient", "") or "")
            if recipient and str(block.get("Action", "")).strip().lower() == "failed":
                failed.append(recipient.partition(";")[2].strip().strip("<>").lower() or recipient.strip().lower())
    return failed
