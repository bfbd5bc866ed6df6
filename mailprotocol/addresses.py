"""Grammar of `MAIL FROM:` / `RCPT TO:` arguments (RFC 5321 4.1.2) and their ESMTP parameters.

Pure functions with no Twisted import, so the simulator's validator predicts exactly what the
server will decide. Strict mode is RFC 5321; lenient mode accepts what QQ and Sina accept
(`MAIL FROM: a@b` with a space after the colon, no angle brackets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LABEL = re.compile(r"(?:[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?)")
_IPV4 = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_ROUTE = re.compile(r"^@[^,:]+(?:,@[^,:]+)*:")


class AddressProblem(StrEnum):
    """Why a MAIL/RCPT argument is refused, decided once here so no caller re-reads the message."""

    UNCLOSED_BRACKET = "unclosed-bracket"
    PARAMETERS_NOT_SEPARATED = "parameters-not-separated"
    NO_ADDRESS = "no-address"
    EMPTY = "empty"
    MISSING_BRACKETS = "missing-brackets"
    SOURCE_ROUTE_MALFORMED = "source-route-malformed"
    PATH_TOO_LONG = "path-too-long"
    BAD_MAILBOX = "bad-mailbox"  # `AddressSyntaxError.mailbox` says what is wrong with it
    PARAMETER_MALFORMED = "parameter-malformed"
    PARAMETER_TWICE = "parameter-twice"


class MailboxProblem(StrEnum):
    """What is wrong with a `local-part@domain` (RFC 5321 4.1.2, limits 4.5.3.1)."""

    NO_AT = "no-at"
    LOCAL_PART_TOO_LONG = "local-part-too-long"
    BAD_DOMAIN = "bad-domain"
    BAD_LOCAL_PART = "bad-local-part"


class AddressSyntaxError(ValueError):
    """The argument is not `<address>` [params]; the message says why, for learners.

    `problem` is the typed reason (and `mailbox` the mailbox's own, for BAD_MAILBOX), so a teacher
    maps it to an explanation without parsing the English; `address` is the mailbox looked at.
    """

    def __init__(
        self, problem: AddressProblem, message: str, *, mailbox: MailboxProblem | None = None, address: str = ""
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.mailbox = mailbox
        self.address = address


class MissingBrackets(AddressSyntaxError):
    """A strict persona got `a@b` where RFC 5321 4.1.2 writes `<a@b>`; some servers answer it apart."""

    def __init__(self, message: str) -> None:
        super().__init__(AddressProblem.MISSING_BRACKETS, message)


@dataclass(frozen=True)
class PathArgument:
    """A parsed MAIL/RCPT argument."""

    address: str  # "" for the null reverse-path <>
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True
    space_after_colon: bool = False
    source_route: bool = False

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()

    @property
    def non_ascii(self) -> bool:
        return not self.address.isascii()


def is_domain(domain: str) -> bool:
    """A host name (dot-separated labels) or an address literal like [192.0.2.1]."""
    if not domain or len(domain) > MAX_DOMAIN:
        return False
    if domain.startswith("[") and domain.endswith("]"):
        inner = domain[1:-1]
        if inner.lower().startswith("ipv6:"):
            return bool(re.fullmatch(r"[0-9A-Fa-f:.]+", inner[5:])) and ":" in inner[5:]
        return bool(_IPV4.fullmatch(inner))
    return all(_LABEL.fullmatch(label) and len(label) <= 63 for label in domain.split("."))


def mailbox_problem(address: str) -> MailboxProblem | None:
    """What is wrong with local-part@domain (RFC 5321 4.5.3.1 length limits), None when nothing.

    The domain is looked at before the local part's characters: `a b@bad` is explained by its domain.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return MailboxProblem.NO_AT
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        return MailboxProblem.LOCAL_PART_TOO_LONG
    if not is_domain(domain):
        return MailboxProblem.BAD_DOMAIN
    if not (_DOT_ATOM.fullmatch(local) or _QUOTED.fullmatch(local)):
        return MailboxProblem.BAD_LOCAL_PART
    return None


def is_mailbox(address: str) -> bool:
    """local-part@domain with the RFC 5321 4.5.3.1 length limits."""
    return mailbox_problem(address) is None


def split_keyword(argument: str, keyword: str, *, strict: bool) -> tuple[str, bool] | None:
    """Strip `FROM:`/`TO:` from the argument; returns (rest, space_after_colon) or None."""
    pattern = rf"{keyword}:" if strict else rf"{keyword}\s*:"
    match = re.match(pattern, argument, re.IGNORECASE)
    if not match:
        return None
    rest = argument[match.end():]
    spaced = rest[:1].isspace()
    if spaced and strict:
        return None
    return rest.lstrip() if not strict else rest, spaced


def parse_path(rest: str, *, strict: bool, allow_null: bool, allow_postmaster: bool = False) -> PathArgument:
    """Parse `<address> [SP params]` (strict) or also `address [params]` (lenient).

    `allow_postmaster`: RCPT accepts the bare `<Postmaster>` (RFC 5321 4.1.1.3).
    """
    spaced = False
    if rest.startswith("<"):
        close = rest.find(">")
        if close < 0:
            raise AddressSyntaxError(AddressProblem.UNCLOSED_BRACKET, "missing '>' after the address")
        inner, tail = rest[1:close], rest[close + 1 :]
        bracketed = True
        if tail and not tail.startswith(" "):
            raise AddressSyntaxError(AddressProblem.PARAMETERS_NOT_SEPARATED, "parameters must be separated from '>' by a space")
    else:
        if strict and not rest.strip():
            raise AddressSyntaxError(AddressProblem.NO_ADDRESS, "no address given")
        if strict:
            raise MissingBrackets("the address must be written in angle brackets: <user@example.com>")
        inner, _, tail = rest.partition(" ")
        bracketed = False
        if not inner:
            raise AddressSyntaxError(AddressProblem.NO_ADDRESS, "no address given")
    route = False
    if inner.startswith("@"):
        match = _ROUTE.match(inner)
        if not match:
            raise AddressSyntaxError(AddressProblem.SOURCE_ROUTE_MALFORMED, "malformed source route")
        inner, route = inner[match.end():], True
    if len(inner.encode("utf-8")) + 2 > MAX_PATH:
        raise AddressSyntaxError(AddressProblem.PATH_TOO_LONG, f"path longer than {MAX_PATH} octets")
    if inner == "":
        if not allow_null or not bracketed:
            raise AddressSyntaxError(AddressProblem.EMPTY, "empty address")
    elif allow_postmaster and inner.lower() == "postmaster":
        pass
    elif (problem := mailbox_problem(inner)) is not None:
        raise AddressSyntaxError(
            AddressProblem.BAD_MAILBOX, f"{inner!r} is not a valid mailbox (local-part@domain)", mailbox=problem, address=inner
        )
    params = parse_params(tail.strip())
    return PathArgument(inner, params, bracketed, spaced, route)


def parse_params(text: str) -> dict[str, str | None]:
    """`KEY=VALUE KEY2` -> {"KEY": "VALUE", "KEY2": None}; keys upper-cased, duplicates refused."""
    params: dict[str, str | None] = {}
    for token in text.split():
        key, eq, value = token.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", key):
            raise AddressSyntaxError(AddressProblem.PARAMETER_MALFORMED, f"malformed parameter {token!r}")
        key = key.upper()
        if key in params:
            raise AddressSyntaxError(AddressProblem.PARAMETER_TWICE, f"parameter {key} given twice")
        params[key] = value if eq else None
    return params


def valid_helo_argument(argument: str) -> bool:
    """HELO/EHLO takes one word: a domain or an address literal (RFC 5321 4.1.1.1).

    No space and no control character: a CR or ESC in the name would reach the Received: header
    the server writes and every log that shows the name.
    """
    return bool(argument) and not any(char == " " or ord(char) < 0x20 or ord(char) == 0x7F for char in argument)
