"""Teaching order: a lesson uses only protocols and commands taught before it or introduced in it.

What a lesson *uses* is read from its reference solutions (the lines a learner sends, connection by
connection: `@connect pop3` switches, message text after DATA and BDAT octets are not commands).
What it *introduces* is what its front matter `tags` name: the protocol (`pop3`) or the command
(`retr`). A command counts as taught once a lesson earlier in the course used it. `maillab lint`
reports the rest, so a reordered course cannot send a learner to POP3 before POP3 was explained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mockservers.lint import Problem

from simulator.engine import knowledge as kb

from .catalog import Catalog
from .model import Lesson


def solution_lines(lesson: Lesson, step_index: int, protocol: str) -> tuple[list[tuple[str, str]], str, set[str]]:
    """(protocol, line) for every command line of one step's solution; the protocol afterwards; all used.

    `protocol` is the connection the step starts on (the previous step's, or the lesson's).
    """
    step = lesson.steps[step_index]
    out: list[tuple[str, str]] = []
    used = {protocol}
    in_data = False
    octets_left = 0
    for raw in step.solution:
        line = raw.strip()
        if line.startswith("@connect"):
            parts = line.split()
            protocol = parts[1].lower() if len(parts) > 1 else protocol
            used.add(protocol)
            in_data, octets_left = False, 0
            continue
        if line.startswith("@"):
            continue
        if in_data:
            in_data = raw != "."
            continue
        if octets_left > 0:
            octets_left -= len(raw.encode("utf-8")) + 2
            continue
        if not line:
            continue
        out.append((protocol, line))
        words = line.upper().split()
        if protocol == "smtp" and words == ["DATA"]:
            in_data = True
        elif protocol == "smtp" and words[0] == "BDAT" and len(words) > 1 and words[1].isdigit():
            octets_left = int(words[1])
    return out, protocol, used


@dataclass(frozen=True)
class Use:
    """One protocol (command None) or one command of a protocol, first used at `line` of `path`."""

    protocol: str
    command: str | None
    path: Path
    line: int

    @property
    def name(self) -> str:
        return f"{self.protocol.upper()} {self.command}" if self.command else self.protocol.upper()


def lesson_uses(lesson: Lesson) -> list[Use]:
    """Every protocol and known command the lesson's solutions send, in order, once each."""
    verbs = {"smtp": set(kb.smtp_commands()), "pop3": set(kb.pop3_commands())}
    protocol = "pop3" if lesson.protocol == "pop3" else "smtp"
    seen: dict[tuple[str, str | None], Use] = {}
    for index, step in enumerate(lesson.steps):
        line = step.solution_line or step.line
        lines, after, used = solution_lines(lesson, index, protocol)
        for name in sorted(used):
            seen.setdefault((name, None), Use(name, None, lesson.path, line))
        for line_protocol, text in lines:
            verb = text.split()[0].upper()
            if verb in verbs[line_protocol]:
                seen.setdefault((line_protocol, verb), Use(line_protocol, verb, lesson.path, line))
        protocol = after
    return list(seen.values())


def introduces(lesson: Lesson, use: Use) -> bool:
    """The lesson's tags name the command (`retr`) or, for a protocol, the protocol (`pop3`)."""
    tags = {tag.lower() for tag in lesson.tags}
    return (use.command or use.protocol).lower() in tags


def check_order(catalog: Catalog) -> list[Problem]:
    """Each use of a protocol or command before the course taught it, as `file:line: message`."""
    problems: list[Problem] = []
    taught: set[tuple[str, str | None]] = set()
    for _track, lesson_ids in catalog.ordered():
        for lesson_id in lesson_ids:
            for language in catalog.lessons.get(lesson_id, {}):
                lesson = catalog.lessons[lesson_id][language]
                for use in lesson_uses(lesson):
                    if (use.protocol, use.command) not in taught and not introduces(lesson, use):
                        problems.append(Problem(
                            str(use.path), use.line,
                            f"lesson {lesson_id!r} uses {use.name} before any earlier lesson taught it: "
                            f"move the lesson after one that does, or introduce it here (name it in `tags`)",
                            "error",
                        ))
            english = catalog.get(lesson_id, "en")
            if english is not None:
                taught |= {(use.protocol, use.command) for use in lesson_uses(english)}
    return problems
