"""One AUTH exchange (RFC 4954 SMTP, RFC 5034 POP3), step by step: PLAIN, LOGIN and CRAM-MD5.

Each step says what the server does with a client line: send a challenge, check credentials, or
refuse with a persona reply key. Credentials are a `check(secret) -> bool`, so the server checks
them against an account and the validator against the persona's accounts with the same function.
The CRAM-MD5 challenge is made by the caller (it is random per session on the server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import codec

#: SASL mechanisms the mock servers can run (others are advertised by some personas but refused).
IMPLEMENTED_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


@dataclass(frozen=True)
class Exchange:
    """An exchange in progress: the mechanism, LOGIN's user name once sent, CRAM-MD5's challenge."""

    mechanism: str
    username: str | None = None
    challenge: bytes = b""


@dataclass(frozen=True)
class Step:
    """What the server does with one line of an exchange.

    kind: "challenge" (send `key`, the exchange goes on as `exchange`), "credentials" (check them:
    `user` and `check`), "error" (send `key` and stop). `problem` names what was wrong with the
    line for a teacher ("plain-no-nul"); `decoded` is the base64-decoded line when it decoded.
    """

    kind: str
    key: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    user: str = ""
    check: Callable[[str], bool] | None = None
    exchange: Exchange | None = None
    problem: str = ""
    decoded: bytes | None = None


def start(mechanism: str, initial: str | None, challenge: bytes = b"") -> Step:
    """The reply to `AUTH mechanism [initial-response]`."""
    if mechanism == "PLAIN":
        if initial is None:
            return Step("challenge", "auth_plain_prompt", exchange=Exchange("PLAIN"))
        return respond(Exchange("PLAIN"), initial)
    if mechanism == "LOGIN":
        if initial is not None and initial.strip() not in ("", "="):
            return respond(Exchange("LOGIN"), initial)
        return Step("challenge", "auth_username_prompt", exchange=Exchange("LOGIN"))
    if mechanism == "CRAM-MD5":
        if initial is not None:
            return Step("error", "auth_malformed", {"reason": "CRAM-MD5 takes no initial response"}, problem="cram-initial")
        shown = codec.b64encode_text(challenge) if challenge else None
        return Step("challenge", "auth_cram_challenge", {"challenge": shown}, exchange=Exchange("CRAM-MD5", challenge=challenge))
    return Step("error", "auth_unknown_mechanism", {"mechanism": mechanism}, problem="mechanism-unsupported")


def respond(exchange: Exchange, line: str) -> Step:
    """Feed one client line of the exchange."""
    if line.strip() == "*":
        return Step("error", "auth_aborted", problem="cancel")
    try:
        decoded = codec.b64decode_strict(line)
    except codec.SASLError:
        return Step("error", "auth_bad_base64", problem="not-base64")
    if exchange.mechanism == "PLAIN":
        try:
            authzid, user, password = codec.parse_plain(decoded)
        except codec.SASLError as problem:
            return _malformed(_plain_problem(decoded), problem, decoded)
        if authzid and authzid.lower() != user.lower():
            return _malformed("plain-authzid", "authorization identity differs from the user", decoded)
        return Step("credentials", user=user, check=lambda secret: secret == password, decoded=decoded)
    if exchange.mechanism == "LOGIN":
        try:
            text = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return _malformed("not-utf8", "decoded text is not UTF-8", decoded)
        if exchange.username is None:
            if not text:
                return _malformed("empty-user", "empty user name", decoded)
            return Step("challenge", "auth_password_prompt", user=text, exchange=Exchange("LOGIN", text), decoded=decoded)
        return Step("credentials", user=exchange.username, check=lambda secret: secret == text, decoded=decoded)
    try:
        user, digest = codec.parse_cram_md5(decoded)
    except codec.SASLError as problem:
        return _malformed("cram-format", problem, decoded)
    signed = exchange.challenge
    return Step("credentials", user=user, check=lambda secret: codec.cram_md5_digest(secret, signed) == digest, decoded=decoded)


def _plain_problem(decoded: bytes) -> str:
    parts = decoded.split(b"\0")
    if len(parts) == 3 and not parts[1]:
        return "plain-empty-user"
    if len(parts) == 3:
        return "not-utf8"
    return "plain-no-nul"


def _malformed(problem: str, reason: object, decoded: bytes) -> Step:
    return Step("error", "auth_malformed", {"reason": str(reason)}, problem=problem, decoded=decoded)
