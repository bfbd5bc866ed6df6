"""Parse what a server sent: SMTP replies (single or multi-line) and POP3 responses.

Parsing is tolerant on purpose: a learner pastes anything, so instead of raising, every parse
returns a dataclass that says what was recognised and lists the problems found (as keys of
messages.toml `problems.*`, so the explainer can say them in either language).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

#: RFC 5321 4.5.3.1.5: a reply line is at most 512 octets including CRLF.
MAX_REPLY_LINE = 512

_SMTP_LINE = re.compile(r"^(?P<code>\d{3})(?!\d)(?P<sep>[ -]?)(?P<text>.*)$", re.DOTALL)
# RFC 3463: class "." subject "." detail; subject and detail 1-3 digits, no leading zeros beyond one.
# qmail's auth patch writes `#2.0.0`, so a leading `#` is recognised (and reported).
_ENHANCED = re.compile(r"^(?P<hash>#?)(?P<class>\d)\.(?P<subject>\d{1,3})\.(?P<detail>\d{1,3})(?=\s|$)")
_POP3_CODE = re.compile(r"^\[(?P<code>[A-Za-z0-9/_-]+)\]\s*")


def split_lines(lines: str | bytes | Iterable[str]) -> list[str]:
    """Accept a block of text, bytes, or a list of lines; return lines without CR/LF."""
    if isinstance(lines, bytes):
        lines = lines.decode("utf-8", errors="replace")
    if isinstance(lines, str):
        text = lines
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        return text.split("\r\n") if "\r\n" in text else text.split("\n")
    return [line.rstrip("\r\n") for line in lines]


# --- enhanced status codes -------------------------------------------------------------------


@dataclass(frozen=True)
class EnhancedCode:
    """An RFC 3463 code `class.subject.detail` found at the start of a reply text."""

    klass: int
    subject: int
    detail: int
    hash_prefix: bool = False  # written `#2.0.0` (qmail auth patch), not standard

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    @property
    def key(self) -> str:
        """`subject.detail`, the key of enhanced_codes.toml `[details]`."""
        return f"{self.subject}.{self.detail}"


def find_enhanced(text: str) -> tuple[EnhancedCode | None, str]:
    """Split a leading enhanced code off a reply text; returns (code or None, rest)."""
    match = _ENHANCED.match(text)
    if not match:
        return None, text
    code = EnhancedCode(
        int(match.group("class")),
        int(match.group("subject")),
        int(match.group("detail")),
        hash_prefix=bool(match.group("hash")),
    )
    return code, text[match.end() :].lstrip(" ")


# --- SMTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SMTPReplyLine:
    """One line of an SMTP reply. `code` is None when the line is not a reply line at all."""

    raw: str
    code: str | None
    separator: str  # "-" (more lines follow), " " (last line), "" (code alone)
    text: str  # after the separator, enhanced code included
    enhanced: EnhancedCode | None
    message: str  # text without the enhanced code
    problems: tuple[str, ...] = ()

    @property
    def is_last(self) -> bool:
        return self.code is not None and self.separator != "-"


def parse_smtp_line(raw: str) -> SMTPReplyLine:
    """Parse one line; never raises."""
    line = raw.rstrip("\r\n")
    problems: list[str] = []
    match = _SMTP_LINE.match(line)
    if not match:
        return SMTPReplyLine(line, None, "", line, None, line, ("not_a_reply",))
    code, separator, text = match.group("code", "sep", "text")
    if code[0] not in "2345":
        problems.append("bad_first_digit")
    if code[1] not in "012345":
        problems.append("bad_second_digit")
    if not separator and text:
        # `250OK`: digits glued to text; treat as text but flag it.
        problems.append("no_separator")
    if len(line.encode("utf-8")) + 2 > MAX_REPLY_LINE:
        problems.append("line_too_long")
    enhanced, message = find_enhanced(text)
    if enhanced is not None and str(enhanced.klass) != code[0]:
        problems.append("enhanced_class_mismatch")
        enhanced, message = None, text
    if enhanced is not None and enhanced.hash_prefix:
        problems.append("enhanced_hash_prefix")
    return SMTPReplyLine(line, code, separator, text, enhanced, message, tuple(problems))


@dataclass(frozen=True)
class SMTPReply:
    """A whole SMTP reply: one or more lines sharing a code, the last one without `-`."""

    lines: tuple[SMTPReplyLine, ...]
    problems: tuple[str, ...] = ()

    @property
    def code(self) -> str | None:
        """The reply code (of the last line, which is what a client acts on)."""
        for line in reversed(self.lines):
            if line.code is not None:
                return line.code
        return None

    @property
    def valid(self) -> bool:
        return self.code is not None and "not_a_reply" not in self.problems

    @property
    def complete(self) -> bool:
        """True when the last line ends the reply (`250 ` rather than `250-`)."""
        return bool(self.lines) and self.lines[-1].is_last

    @property
    def multiline(self) -> bool:
        return len(self.lines) > 1

    @property
    def enhanced(self) -> EnhancedCode | None:
        """The enhanced code of the reply (first line that carries one)."""
        for line in self.lines:
            if line.enhanced is not None:
                return line.enhanced
        return None

    @property
    def texts(self) -> list[str]:
        """The text of each line, enhanced codes included."""
        return [line.text for line in self.lines]

    @property
    def messages(self) -> list[str]:
        """The text of each line without enhanced codes."""
        return [line.message for line in self.lines]

    @property
    def category(self) -> Literal["positive", "intermediate", "transient", "permanent", "unknown"]:
        first = (self.code or "0")[0]
        return {
            "2": "positive",
            "3": "intermediate",
            "4": "transient",
            "5": "permanent",
        }.get(first, "unknown")  # type: ignore[return-value]

    @property
    def raw(self) -> list[str]:
        return [line.raw for line in self.lines]


def parse_smtp_reply(lines: str | bytes | Iterable[str]) -> SMTPReply:
    """Parse the lines of one reply, checking the multi-line rules of RFC 5321 4.2.1."""
    parsed = tuple(parse_smtp_line(line) for line in split_lines(lines))
    problems: list[str] = []
    if not parsed or (len(parsed) == 1 and not parsed[0].raw.strip()):
        return SMTPReply(parsed, ("empty",))
    for line in parsed:
        for problem in line.problems:
            if problem not in problems:
                problems.append(problem)
    codes = {line.code for line in parsed if line.code is not None}
    if len(codes) > 1:
        problems.append("mixed_codes")
    for line in parsed[:-1]:
        if line.code is not None and line.separator != "-":
            problems.append("early_last_line")
            break
    if parsed[-1].code is not None and parsed[-1].separator == "-":
        problems.append("unterminated")
    return SMTPReply(parsed, tuple(problems))


def split_smtp_replies(lines: str | bytes | Iterable[str]) -> tuple[list[SMTPReply], list[str]]:
    """Split a stream of lines into complete replies (pipelining sends several at once).

    Returns (complete replies, leftover lines of an unfinished multi-line reply). A line that
    is not a reply line ends a reply on its own, so garbage never swallows what follows.
    """
    replies: list[SMTPReply] = []
    pending: list[str] = []
    for line in split_lines(lines):
        parsed = parse_smtp_line(line)
        if parsed.code is None:
            if pending:
                replies.append(parse_smtp_reply(pending))
                pending = []
            replies.append(parse_smtp_reply([line]))
            continue
        pending.append(line)
        if parsed.is_last:
            replies.append(parse_smtp_reply(pending))
            pending = []
    return replies, pending


# --- POP3 ------------------------------------------------------------------------------------

POP3Kind = Literal["ok", "err", "continuation", "invalid"]


@dataclass(frozen=True)
class POP3Reply:
    """A POP3 response: the status line and, for multi-line responses, the unstuffed data lines."""

    raw: tuple[str, ...]
    kind: POP3Kind
    indicator: str | None  # "+OK", "-ERR", "+" or None
    response_code: str | None  # e.g. "SYS/TEMP" from `-ERR [SYS/TEMP] ...`
    text: str  # the status line after the indicator and the response code
    data: tuple[str, ...] = ()  # lines after the status line, dot-unstuffed, without the final "."
    terminated: bool = False  # the final "." was seen
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def challenge(self) -> str | None:
        """The base64 text of a `+ ` continuation (possibly empty), else None."""
        return self.text if self.kind == "continuation" else None


def parse_pop3_status(line: str) -> tuple[POP3Kind, str | None, str | None, str, list[str]]:
    """Parse a POP3 status line: (kind, indicator, response code, text, problems)."""
    problems: list[str] = []
    stripped = line.rstrip("\r\n")
    upper = stripped.upper()
    if upper.startswith("+OK") and (len(stripped) == 3 or stripped[3] == " "):
        kind: POP3Kind = "ok"
        indicator: str | None = "+OK"
        rest = stripped[4:]
        if not stripped.startswith("+OK"):
            problems.append("indicator_case")
    elif upper.startswith("-ERR") and (len(stripped) == 4 or stripped[4] == " "):
        kind, indicator, rest = "err", "-ERR", stripped[5:]
        if not stripped.startswith("-ERR"):
            problems.append("indicator_case")
    elif stripped == "+" or stripped.startswith("+ "):
        return "continuation", "+", None, stripped[2:], problems
    else:
        return "invalid", None, None, stripped, ["not_a_pop3_reply"]
    code = None
    match = _POP3_CODE.match(rest)
    if match:
        code = match.group("code").upper()
        rest = rest[match.end() :]
    if len(stripped.encode("utf-8")) + 2 > MAX_REPLY_LINE:
        problems.append("line_too_long")
    return kind, indicator, code, rest, problems


def parse_pop3_reply(lines: str | bytes | Iterable[str], *, multiline: bool | None = None) -> POP3Reply:
    """Parse a POP3 response.

    `multiline`: True when the command's +OK is followed by data (LIST, RETR, CAPA ...), False
    when not, None to guess (data follows if more lines were given).
    """
    raw = split_lines(lines)
    if not raw or (len(raw) == 1 and not raw[0].strip()):
        return POP3Reply(tuple(raw), "invalid", None, None, "", problems=("empty",))
    kind, indicator, code, text, problems = parse_pop3_status(raw[0])
    data: list[str] = []
    terminated = False
    expect_data = kind == "ok" and (multiline if multiline is not None else len(raw) > 1)
    if expect_data:
        for line in raw[1:]:
            if line == ".":
                terminated = True
                break
            data.append(line[1:] if line.startswith(".") else line)
        if not terminated:
            problems.append("unterminated")
    elif len(raw) > 1:
        problems.append("extra_lines")
    return POP3Reply(tuple(raw), kind, indicator, code, text, tuple(data), terminated, tuple(problems))


# --- what kind of text is this? --------------------------------------------------------------

_COMMANDISH = re.compile(
    r"^\s*(HELO|EHLO|MAIL\s+FROM|RCPT\s+TO|DATA|BDAT|RSET|NOOP|VRFY|EXPN|HELP|QUIT|STARTTLS|AUTH|ETRN"
    r"|TURN|ATRN|USER|PASS|APOP|CAPA|STLS|STAT|LIST|RETR|DELE|TOP|UIDL)\b",
    re.IGNORECASE,
)


def looks_like_command(line: str) -> bool:
    """True when the text is something a client sends (a pasted command, not a reply)."""
    return bool(_COMMANDISH.match(line))


def looks_like_pop3(line: str) -> bool:
    return parse_pop3_status(line)[0] != "invalid"


def looks_like_smtp(line: str) -> bool:
    return parse_smtp_line(line).code is not None
