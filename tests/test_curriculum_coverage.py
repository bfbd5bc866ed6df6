"""The bundled curriculum practises the whole syllabus of the seed tutorial.

The seed document (`tests/fixtures/000_c13da0eb7b1f4bd6.txt`) lists the SMTP commands
and the reply codes this project teaches; POP3 adds the commands of RFC 1939, 2449, 2595 and 5034.
Every one of them must be *practised* in at least one step of the bundled lessons (`lessons/`):

- a command, when a `>` pattern of an expect block, or a line of a solution, starts with it, on a
  connection of the right protocol (SMTP and POP3 share QUIT, RSET, NOOP and AUTH);
- a reply code, when an expect block has `< CODE` with exactly that code (`< 250`, `< 550 5.1.1`;
  wildcards such as `< 5xx` do not count);
- the four service extensions the seed lists among the commands have no verb of their own, so:
  SIZE needs a `MAIL FROM` line with a `SIZE=` parameter, DSN a `MAIL FROM`/`RCPT TO` line with
  `RET=`, `ENVID=`, `NOTIFY=` or `ORCPT=`, CHUNKING a `BDAT` line, and PIPELINING (a way of sending,
  not a line) a lesson tagged `pipelining`.

Each item is its own test case, so a failure names exactly what is missing. When the seed document
cannot be found, the lists of `simulator/knowledge/seed.toml` are used instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

from simulator.course.catalog import load_catalog
from simulator.course.model import Lesson
from simulator.course.order import solution_lines as _solution_lines
from simulator.engine import knowledge as kb

REPO = Path(__file__).resolve().parents[1]
LESSONS = REPO / "lessons"
SEED_NAME = "000_c13da0eb7b1f4bd6.txt"
SEED_PATH = Path(__file__).resolve().parent / "fixtures" / SEED_NAME

#: POP3 commands of RFC 1939 (USER ... APOP), RFC 2449 (CAPA), RFC 2595 (STLS) and RFC 5034 (AUTH).
POP3_COMMANDS = ["USER", "PASS", "STAT", "LIST", "RETR", "DELE", "RSET", "TOP", "UIDL", "QUIT", "APOP", "CAPA", "STLS", "AUTH", "NOOP"]

POP3_SOURCE = "POP3: RFC 1939, 2449, 2595, 5034"

#: Verbs written as two words in lessons and in the seed.
TWO_WORDS = {"MAIL": "MAIL FROM", "RCPT": "RCPT TO"}

#: How a verb-less extension counts as practised (see the module docstring).
EXTENSION_RULES = {
    "SIZE": "a `MAIL FROM` line with a `SIZE=` parameter",
    "DSN": "a `MAIL FROM` or `RCPT TO` line with `RET=`, `ENVID=`, `NOTIFY=` or `ORCPT=`",
    "CHUNKING": "a `BDAT` line",
    "PIPELINING": "a lesson tagged `pipelining`",
}


# --- the syllabus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Syllabus:
    source: str
    smtp_commands: tuple[str, ...]  # "HELO", "MAIL FROM", "RCPT TO", "STARTTLS" ...
    smtp_extensions: tuple[str, ...]  # "SIZE", "PIPELINING", "CHUNKING", "DSN"
    reply_codes: tuple[str, ...]


def _normalise(name: str) -> str:
    name = " ".join(name.upper().split())
    return TWO_WORDS.get(name, name)


def _seed_from_document(text: str) -> Syllabus:
    """The command list ("SMTP命令列表"), the verbs typed in the two sessions, every reply code."""
    start, end = text.index("SMTP命令列表"), text.index("SMTP命令响应码")
    listed = re.findall(r"^([A-Z][A-Z0-9]+(?: FROM| TO)?)\s*$", text[start:end], re.MULTILINE)
    sessions = text[:start]
    typed = []
    for verb in kb.smtp_commands():
        pattern = {"MAIL": r"\bmail\s+from\b", "RCPT": r"\brcpt\s+to\b"}.get(verb, rf"(?<![\w-]){verb}(?![\w-])")
        if re.search(pattern, sessions, re.IGNORECASE):
            typed.append(verb)
    commands: list[str] = []
    extensions: list[str] = []
    for name in [*listed, *typed]:
        name = _normalise(name)
        if kb.smtp_extension(name) is not None and kb.smtp_command(name) is None:
            if name not in extensions:
                extensions.append(name)
        elif name not in commands:
            commands.append(name)
    codes = sorted(set(re.findall(r"(?<![\d.])([2-5][0-5]\d)(?![\d.])", text)))
    return Syllabus(str(SEED_PATH), tuple(commands), tuple(extensions), tuple(codes))


def _seed_from_knowledge() -> Syllabus:
    seed = kb.seed()
    commands = tuple(dict.fromkeys(_normalise(v) for v in seed["smtp_commands"]))
    return Syllabus("simulator/knowledge/seed.toml", commands, tuple(seed["smtp_extensions"]), tuple(seed["reply_codes"]))


@lru_cache(maxsize=1)
def syllabus() -> Syllabus:
    return _seed_from_document(SEED_PATH.read_text(encoding="utf-8"))


# --- what the lessons practise -----------------------------------------------------------------


@dataclass
class Practice:
    """Every command line the lessons make the learner send, by protocol, and every exact reply code."""

    lessons: list[Lesson] = field(default_factory=list)
    lines: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {"smtp": [], "pop3": []})  # (line, where)
    codes: dict[str, list[str]] = field(default_factory=dict)  # code -> where
    tags: dict[str, list[str]] = field(default_factory=dict)  # tag -> lesson ids
    errors: list[str] = field(default_factory=list)

    def add_line(self, protocol: str, line: str, where: str) -> None:
        self.lines[protocol].append((" ".join(line.split()), where))


def _reply_protocol(reply: str) -> str | None:
    if re.match(r"\d", reply):
        return "smtp"
    if reply.startswith(("+OK", "-ERR", "+ ")) or reply == "+":
        return "pop3"
    return None


def _first_word(line: str) -> str:
    return line.split()[0].upper() if line.split() else ""


def _pattern_protocol(pattern: str, solution: list[tuple[str, str]], after: str, used: set[str]) -> str:
    """The connection a `>` pattern with no `<` under it is meant for.

    A step that stays on one connection is easy. In a step that switches (`@connect pop3`), the
    solution line with the same first word tells; failing that, the connection the step ends on.
    """
    if len(used) == 1:
        return next(iter(used))
    word = _first_word(pattern)
    matching = [protocol for protocol, line in solution if _first_word(line) == word]
    return matching[-1] if matching else after


def _collect(lessons: list[Lesson]) -> Practice:
    practice = Practice(lessons=lessons)
    for lesson in lessons:
        for tag in lesson.tags:
            practice.tags.setdefault(tag.lower(), []).append(lesson.id)
        protocol = "pop3" if lesson.protocol == "pop3" else "smtp"
        for index, step in enumerate(lesson.steps):
            where = f"{lesson.path.relative_to(REPO) if lesson.path.is_relative_to(REPO) else lesson.path} step {step.id!r}"
            lines, after, used = _solution_lines(lesson, index, protocol)
            for line_protocol, line in lines:
                practice.add_line(line_protocol, line, f"{where} (solution)")
            for group in step.checks:
                expectations = list(group.expectations)
                for position, expectation in enumerate(expectations):
                    if expectation.kind == "reply":
                        match = re.match(r"(\d{3})(?:\s|$)", expectation.text)
                        if match:
                            practice.codes.setdefault(match.group(1), []).append(f"{where} (line {expectation.line})")
                        continue
                    if expectation.kind != "send":
                        continue
                    following = next((e for e in expectations[position + 1 :] if e.kind in ("send", "reply")), None)
                    by_reply = _reply_protocol(following.text) if following is not None and following.kind == "reply" else None
                    pattern_protocol = by_reply or _pattern_protocol(expectation.text, lines, after, used)
                    practice.add_line(pattern_protocol, expectation.text, f"{where} (line {expectation.line})")
            protocol = after
    return practice


@lru_cache(maxsize=1)
def practice() -> Practice:
    catalog = load_catalog([LESSONS], include_bundled=False)
    lessons = [lesson for versions in catalog.lessons.values() for lesson in versions.values()]
    collected = _collect(lessons)
    collected.errors = [f"{error.path}:{error.line}: {error.message}" for error in catalog.errors]
    return collected


def _starts_with(line: str, command: str) -> bool:
    """`MAIL FROM:<x>` starts with MAIL FROM; `RCPT TO:{any}` with RCPT TO; `QUIT` with QUIT; `QUITE` not."""
    words = command.split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    return re.match(rf"{pattern}(?![A-Za-z0-9])", line, re.IGNORECASE) is not None


def _practised(protocol: str, command: str, found: Practice | None = None) -> list[str]:
    found = found or practice()
    return [where for line, where in found.lines[protocol] if _starts_with(line, command)]


def _extension_practised(extension: str, found: Practice | None = None) -> list[str]:
    found = found or practice()
    lines = found.lines["smtp"]
    if extension == "SIZE":
        return [w for line, w in lines if _starts_with(line, "MAIL FROM") and re.search(r"\sSIZE=", line, re.IGNORECASE)]
    if extension == "DSN":
        return [
            w
            for line, w in lines
            if (_starts_with(line, "MAIL FROM") or _starts_with(line, "RCPT TO")) and re.search(r"\s(RET|ENVID|NOTIFY|ORCPT)=", line, re.IGNORECASE)
        ]
    if extension == "CHUNKING":
        return [w for line, w in lines if _starts_with(line, "BDAT")]
    if extension == "PIPELINING":
        return found.tags.get("pipelining", [])
    raise KeyError(extension)


def _missing(what: str, rule: str, source: str | None = None) -> str:
    found = practice()
    return (
        f"{what} is in the syllabus ({source or syllabus().source}) but no step of the {len(found.lessons)} bundled "
        f"lesson files in {LESSONS} practises it: {rule}."
    )


# --- the tests ---------------------------------------------------------------------------------


def test_the_syllabus_is_read() -> None:
    """The seed parser still finds the lists (so the cases below are not vacuous)."""
    seed = syllabus()
    assert {"HELO", "EHLO", "MAIL FROM", "RCPT TO", "DATA", "RSET", "VRFY", "HELP", "QUIT", "TURN", "ATRN", "ETRN", "AUTH", "STARTTLS"} <= set(seed.smtp_commands), seed
    assert {"SIZE", "PIPELINING", "CHUNKING", "DSN"} <= set(seed.smtp_extensions), seed
    assert len(seed.reply_codes) >= 24 and {"211", "214", "252", "354", "555"} <= set(seed.reply_codes), seed
    assert all(kb.smtp_command(name) is not None for name in seed.smtp_commands)
    assert set(seed.smtp_extensions) <= set(EXTENSION_RULES)


def test_the_knowledge_fallback_matches_the_rules() -> None:
    fallback = _seed_from_knowledge()
    assert set(fallback.smtp_extensions) <= set(EXTENSION_RULES)
    assert {"MAIL FROM", "RCPT TO"} <= set(fallback.smtp_commands)


def test_every_bundled_lesson_parses() -> None:
    """A lesson that does not parse cannot count: its steps would silently be missing below."""
    if practice().errors:
        pytest.fail("lesson files that do not parse:\n" + "\n".join(practice().errors), pytrace=False)


@pytest.mark.parametrize("command", syllabus().smtp_commands)
def test_smtp_command_is_practised(command: str) -> None:
    if not _practised("smtp", command):
        pytest.fail(_missing(f"SMTP command {command}", f"no `>` pattern or solution line on an SMTP connection starts with `{command}`"), pytrace=False)


@pytest.mark.parametrize("extension", syllabus().smtp_extensions)
def test_smtp_extension_is_practised(extension: str) -> None:
    if extension not in EXTENSION_RULES:
        pytest.fail(f"the seed lists the extension {extension}, and this test has no rule for it: add one to EXTENSION_RULES")
    if not _extension_practised(extension):
        pytest.fail(_missing(f"SMTP extension {extension}", f"it needs {EXTENSION_RULES[extension]}, and there is none"), pytrace=False)


@pytest.mark.parametrize("command", POP3_COMMANDS)
def test_pop3_command_is_practised(command: str) -> None:
    if not _practised("pop3", command):
        pytest.fail(
            _missing(f"POP3 command {command}", f"no `>` pattern or solution line on a POP3 connection starts with `{command}`", POP3_SOURCE),
            pytrace=False,
        )


@pytest.mark.parametrize("code", syllabus().reply_codes)
def test_reply_code_is_practised(code: str) -> None:
    if code not in practice().codes:
        pytest.fail(_missing(f"reply code {code}", f"no expect block has a `< {code}` line (wildcards like `< {code[0]}xx` do not count)"), pytrace=False)


# --- the checker checks itself -----------------------------------------------------------------

_SAMPLE = """---
id: sample
title: Sample
protocol: both
tags: [smtp, pipelining]
---
:::: step send
### Send
```expect
> MAIL FROM:<$user> SIZE=100
< 250
> RCPT TO:<$to> NOTIFY=SUCCESS
< 250
> DATA
< 354
> .
< 250 2.0.0
```
```solution
MAIL FROM:<alice@example.com> SIZE=100
RCPT TO:<bob@example.com> NOTIFY=SUCCESS
DATA
Subject: text is not a command

QUIT is only a word of the body here
.
```
::::

:::: step refused
### Refused
```expect
< 5xx
```
```expect
> RSET
< 554 5.7.1
```
```solution
RSET
```
::::

:::: step fetch
### Fetch
```expect
> NOOP
? authenticated
```
```solution
QUIT
@connect pop3
USER bob@example.com
PASS bob-secret
NOOP
```
::::

:::: step back
### Back to SMTP
```expect
> HELP
```
```solution
QUIT
@connect smtp
HELP
```
::::
"""


def _sample(tmp_path: Path) -> Practice:
    from simulator.course.parser import parse_lesson_text

    return _collect([parse_lesson_text(_SAMPLE, tmp_path / "sample.md")])


def test_checker_reads_commands_by_protocol(tmp_path: Path) -> None:
    found = _sample(tmp_path)
    assert _practised("smtp", "MAIL FROM", found) and _practised("smtp", "RCPT TO", found)
    assert _practised("smtp", "RSET", found) and not _practised("pop3", "RSET", found)
    # `> NOOP` has no reply under it: the step's solution sends NOOP after `@connect pop3`
    assert _practised("pop3", "NOOP", found) and not _practised("smtp", "NOOP", found)
    assert _practised("pop3", "USER", found) and _practised("pop3", "QUIT", found)
    # the HELP pattern of the last step belongs to the SMTP connection it switched back to
    assert _practised("smtp", "HELP", found) and not _practised("pop3", "HELP", found)
    # a line of message text is not a command, even when it starts with one
    assert [w for w in _practised("smtp", "QUIT", found) if "'send'" in w] == []
    assert not _practised("smtp", "QUI", found)


def test_checker_reads_extensions_and_codes(tmp_path: Path) -> None:
    found = _sample(tmp_path)
    assert _extension_practised("SIZE", found) and _extension_practised("DSN", found)
    assert _extension_practised("PIPELINING", found) == ["sample"]
    assert _extension_practised("CHUNKING", found) == []
    assert {"250", "354", "554"} <= set(found.codes)
    assert not any(code.startswith("5") and code != "554" for code in found.codes)  # `< 5xx` is no code
