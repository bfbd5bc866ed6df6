"""Parse what a client typed: an SMTP or POP3 command line, leniently.

The session model needs the envelope addresses and AUTH mechanism out of a command even when the
learner typed it the way the seed tutorial does (`mail from: <a@b>`, `MAIL FROM: a@b`). So the
parser accepts the common deviations and records them as problem keys (messages.toml
`problems.*`) instead of refusing; a validator decides how strict to be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailprotocol import smtp

#: Verbs that take no argument (an argument is a 501 on strict servers).
SMTP_NO_ARGUMENT = frozenset(verb.name for verb in smtp.VERBS if verb.argument == "none")
#: Verbs that need an argument.
SMTP_NEED_ARGUMENT = frozenset(verb.name for verb in smtp.VERBS if verb.argument == "required")

_VERB = re.compile(r"^(?P<verb>[A-Za-z][A-Za-z0-9-]*)(?:(?P<space>[ \t]+)(?P<arg>.*))?$", re.DOTALL)
_PATH_INTRO = {"MAIL": "FROM", "RCPT": "TO"}
_BDAT = re.compile(r"^(?P<size>\d+)(?:\s+(?P<last>LAST))?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class SMTPCommand:
    """One SMTP command line, split into its parts."""

    raw: str
    verb: str | None  # upper case; None when the line does not start with a word
    argument: str = ""  # everything after the verb
    path: str | None = None  # MAIL/RCPT: the address between < and > (or typed bare)
    params: dict[str, str | None] = field(default_factory=dict)  # ESMTP parameters, keys upper case
    mechanism: str | None = None  # AUTH: the mechanism, upper case
    initial_response: str | None = None  # AUTH: the base64 after the mechanism
    chunk_size: int | None = None  # BDAT
    last_chunk: bool = False  # BDAT ... LAST
    problems: tuple[str, ...] = ()


def _split_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for token in text.split():
        key, eq, value = token.partition("=")
        params[key.upper()] = value if eq else None
    return params


def _parse_path(verb: str, argument: str, problems: list[str]) -> tuple[str | None, dict[str, str | None]]:
    intro = _PATH_INTRO[verb]
    match = re.match(rf"^{intro}(?P<before>\s*):(?P<after>\s*)(?P<rest>.*)$", argument, re.IGNORECASE | re.DOTALL)
    if not match:
        problems.append("missing_from_to")
        return None, {}
    if match.group("before") or match.group("after"):
        problems.append("space_around_colon")
    rest = match.group("rest").strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            problems.append("unbalanced_brackets")
            return rest[1:], {}
        path, tail = rest[1:end], rest[end + 1 :]
        if tail and not tail.startswith(" "):
            problems.append("bad_parameters")
        return path, _split_params(tail)
    if not rest:
        problems.append("missing_argument")
        return None, {}
    problems.append("missing_brackets")
    path, _, tail = rest.partition(" ")
    return path, _split_params(tail)


def parse_smtp_command(line: str) -> SMTPCommand:
    """Parse one SMTP command line; never raises."""
    raw = line.rstrip("\r\n")
    match = _VERB.match(raw.strip())
    if not match:
        return SMTPCommand(raw, None, problems=("not_a_command",))
    verb = match.group("verb").upper()
    argument = (match.group("arg") or "").strip()
    problems: list[str] = []
    if raw != raw.lstrip():
        problems.append("leading_space")
    if verb in SMTP_NO_ARGUMENT and argument:
        problems.append("unexpected_argument")
    if verb in SMTP_NEED_ARGUMENT and not argument:
        problems.append("missing_argument")
        return SMTPCommand(raw, verb, "", problems=tuple(problems))
    path: str | None = None
    params: dict[str, str | None] = {}
    mechanism = initial = None
    size: int | None = None
    last = False
    if verb in _PATH_INTRO:
        path, params = _parse_path(verb, argument, problems)
    elif verb == "AUTH":
        parts = argument.split()
        mechanism = parts[0].upper()
        initial = parts[1] if len(parts) > 1 else None
        if len(parts) > 2:
            problems.append("unexpected_argument")
    elif verb == "BDAT":
        bdat = _BDAT.match(argument)
        if bdat:
            size = int(bdat.group("size"))
            last = bool(bdat.group("last"))
        else:
            problems.append("bad_parameters")
    return SMTPCommand(raw, verb, argument, path, params, mechanism, initial, size, last, tuple(problems))


@dataclass(frozen=True)
class POP3Command:
    """One POP3 command line: the keyword and its arguments."""

    raw: str
    verb: str | None
    arguments: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def argument(self) -> str:
        return " ".join(self.arguments)

    def number(self, index: int = 0) -> int | None:
        """Argument `index` as a message number, or None when absent or not a number."""
        if index < len(self.arguments) and self.arguments[index].isdigit():
            return int(self.arguments[index])
        return None


def parse_pop3_command(line: str) -> POP3Command:
    """Parse one POP3 command line; never raises. PASS keeps spaces inside the password."""
    raw = line.rstrip("\r\n")
    match = _VERB.match(raw.strip())
    if not match:
        return POP3Command(raw, None, problems=("not_a_command",))
    verb = match.group("verb").upper()
    argument = match.group("arg") or ""
    if verb == "PASS":
        arguments: tuple[str, ...] = (argument,) if argument else ()
    else:
        arguments = tuple(argument.split())
    problems = ("line_too_long",) if len(raw.encode("utf-8")) + 2 > 255 else ()
    return POP3Command(raw, verb, arguments, problems)
