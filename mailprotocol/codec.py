"""Pure encoders and decoders for the authentication exchanges of SMTP and POP3.

No Twisted imports: the servers, the simulator's engine and the TUI tools all use these
functions, so a learner's calculator and the server agree byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

#: The challenges AUTH LOGIN servers send (RFC-less draft): `Username:` and `Password:`.
LOGIN_USERNAME_PROMPT = "Username:"
LOGIN_PASSWORD_PROMPT = "Password:"


class SASLError(ValueError):
    """A client line in an AUTH exchange could not be decoded."""


def b64encode_text(text: str | bytes) -> str:
    """Base64 of UTF-8 text, as a learner would type it after `334`."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(line: str) -> bytes:
    """Decode one base64 line, refusing junk instead of silently skipping it.

    `=` alone is the RFC 4954 spelling of an empty initial response.
    """
    stripped = line.strip()
    if stripped == "=":
        return b""
    if not stripped:
        return b""
    try:
        return base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as error:
        raise SASLError(f"not valid base64: {error}") from None


def plain_payload(username: str, password: str, authzid: str = "") -> str:
    """AUTH PLAIN initial response (RFC 4616): base64 of `authzid NUL user NUL pass`."""
    return b64encode_text(f"{authzid}\0{username}\0{password}")


def parse_plain(decoded: bytes) -> tuple[str, str, str]:
    """Split a decoded AUTH PLAIN message into (authzid, username, password)."""
    parts = decoded.split(b"\0")
    if len(parts) != 3:
        raise SASLError(
            f"AUTH PLAIN needs exactly two NUL separators (authzid\\0user\\0pass), found {len(parts) - 1}"
        )
    try:
        authzid, username, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SASLError("AUTH PLAIN payload is not UTF-8") from None
    if not username:
        raise SASLError("AUTH PLAIN payload has an empty user name")
    return authzid, username, password


def cram_md5_digest(secret: str, challenge: bytes | str) -> str:
    """Lower-case hex HMAC-MD5 of the challenge keyed with the secret (RFC 2195)."""
    if isinstance(challenge, str):
        challenge = challenge.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), challenge, hashlib.md5).hexdigest()


def cram_md5_response(username: str, secret: str, challenge: bytes | str) -> str:
    """The base64 line a client sends after a CRAM-MD5 `334 <challenge>`."""
    return b64encode_text(f"{username} {cram_md5_digest(secret, challenge)}")


def parse_cram_md5(decoded: bytes) -> tuple[str, str]:
    """Split a decoded CRAM-MD5 response into (username, hex digest)."""
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("CRAM-MD5 response is not UTF-8") from None
    username, space, digest = text.rpartition(" ")
    if not space or not username:
        raise SASLError("CRAM-MD5 response must be `username SP digest`")
    if not re.fullmatch(r"[0-9a-f]{32}", digest):
        raise SASLError("CRAM-MD5 digest must be 32 lower-case hex digits")
    return username, digest


def apop_digest(timestamp: str, secret: str) -> str:
    """Lower-case hex MD5 of the greeting's timestamp followed by the secret (RFC 1939 7)."""
    return hashlib.md5((timestamp + secret).encode("utf-8")).hexdigest()


_XTEXT_SAFE = {c for c in range(33, 127) if c not in (ord("+"), ord("="))}


def xtext_encode(text: str) -> str:
    """RFC 3461 xtext: `+`, `=` and anything outside `!`..`~` becomes `+XX`."""
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if byte in _XTEXT_SAFE else f"+{byte:02X}")
    return "".join(out)


_XTEXT_RE = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")


def is_xtext(value: str) -> bool:
    """True when the value is well-formed xtext (upper-case hex after `+`)."""
    return _XTEXT_RE.fullmatch(value) is not None


def xtext_decode(value: str) -> str:
    """Decode xtext, refusing malformed input."""
    if not is_xtext(value):
        raise SASLError(f"not valid xtext: {value!r}")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
