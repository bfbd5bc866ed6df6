"""Codec helpers for learners' calculators: the ones in mailprotocol.codec, plus what they lack.

The server and the engine must agree byte for byte, so the shared encoders are imported from
`mailprotocol.codec` (pure Python, no Twisted) and re-exported here; this module only adds the
client-side conveniences the explainer and the session model need.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mailprotocol.codec import (
    LOGIN_PASSWORD_PROMPT,
    LOGIN_USERNAME_PROMPT,
    SASLError,
    apop_digest,
    b64decode_strict,
    b64encode_text,
    cram_md5_digest,
    cram_md5_response,
    is_xtext,
    parse_cram_md5,
    parse_plain,
    plain_payload,
    xtext_decode,
    xtext_encode,
)

__all__ = [
    "LOGIN_PASSWORD_PROMPT",
    "LOGIN_USERNAME_PROMPT",
    "SASLError",
    "apop_digest",
    "apop_timestamp",
    "b64decode_strict",
    "b64encode_text",
    "cram_md5_digest",
    "cram_md5_response",
    "decode_base64_text",
    "DecodedText",
    "is_xtext",
    "login_payload",
    "looks_like_base64",
    "parse_cram_md5",
    "parse_plain",
    "parse_xoauth2",
    "plain_payload",
    "xoauth2_payload",
    "xtext_decode",
    "xtext_encode",
]

_BASE64_RE = re.compile(r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
_APOP_TIMESTAMP = re.compile(r"<[^<>\s]+@[^<>\s]+>")


def login_payload(username: str, password: str) -> tuple[str, str]:
    """The two base64 lines a client types in AUTH LOGIN: the user name, then the password."""
    return b64encode_text(username), b64encode_text(password)


def xoauth2_payload(username: str, token: str) -> str:
    """AUTH XOAUTH2 initial response: base64 of `user=U^Aauth=Bearer T^A^A`."""
    return b64encode_text(f"user={username}\x01auth=Bearer {token}\x01\x01")


def parse_xoauth2(decoded: bytes) -> tuple[str, str]:
    """Split a decoded XOAUTH2 response into (user, bearer token)."""
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("XOAUTH2 response is not UTF-8") from None
    fields = dict(
        part.split("=", 1) for part in text.split("\x01") if "=" in part
    )
    user = fields.get("user", "")
    auth = fields.get("auth", "")
    if not user or not auth.startswith("Bearer "):
        raise SASLError("XOAUTH2 response must be user=...^Aauth=Bearer ...^A^A")
    return user, auth[len("Bearer ") :]


def looks_like_base64(line: str) -> bool:
    """True for a non-empty, correctly padded base64 string (what a 334 challenge carries)."""
    stripped = line.strip()
    return bool(stripped) and len(stripped) % 4 == 0 and bool(_BASE64_RE.match(stripped))


@dataclass(frozen=True)
class DecodedText:
    """A base64 line decoded for display: `text` is printable; `exact` is False when bytes had to
    be escaped (`\\0`, `\\x01`) or were not UTF-8."""

    data: bytes
    text: str
    exact: bool


def decode_base64_text(line: str) -> DecodedText | None:
    """Decode base64 for a human: UTF-8 when possible, control bytes shown as `\\x01` etc.

    None when the line is not base64 (a 334 with plain text, e.g. a server's error message).
    """
    if not looks_like_base64(line):
        return None
    try:
        data = b64decode_strict(line)
    except SASLError:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        exact = False
    else:
        exact = True
    shown = []
    for char in text:
        if char == "\0":
            shown.append("\\0")
            exact = False
        elif unicodedata.category(char) in ("Cc", "Cf") and char not in "\t":
            shown.append(f"\\x{ord(char):02x}")
            exact = False
        else:
            shown.append(char)
    return DecodedText(data, "".join(shown), exact)


def apop_timestamp(greeting: str) -> str | None:
    """The `<...@...>` timestamp of a POP3 greeting, which APOP signs (RFC 1939 7)."""
    match = _APOP_TIMESTAMP.search(greeting)
    return match.group(0) if match else None
