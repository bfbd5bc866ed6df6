"""Parse a lesson file (Markdown + YAML front matter) with markdown-it-py and mdit-py-plugins.

```
---                              front matter (YAML, loaded with safe_load: data only)
id: smtp-hello
title: Say hello
protocol: smtp
profile: rfc
---
# Say hello                      intro prose
:::: step ehlo                   a step (four colons: it holds ::: blocks)
Prose and the task.
```expect                        one accepted way (several blocks = several ways)
> EHLO {domain}
< 250
```
::: hint                         shown one by one
:::
::: explain 500                  keyed by reply code (500, 5xx) or diagnostic:<id>
:::
```solution                      replayed by `maillab lint`
EHLO learner.example
```
::::
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.container import container_plugin
from mdit_py_plugins.front_matter import front_matter_plugin

from .model import CheckGroup, Expectation, Explanation, Lesson, Step

STEP_OPTIONS = frozenset({"strict"})
PROTOCOLS = ("smtp", "pop3", "both")
LANGUAGES = ("en", "zh")
_STEP_ID = re.compile(r"^[a-z0-9][a-z0-9\-_]*$")
_FRONT_MATTER = {
    "id": str,
    "title": str,
    "summary": str,
    "protocol": str,
    "profile": str,
    "profile_overrides": dict,
    "accounts": list,
    "mail": list,
    "vars": dict,
    "prerequisites": list,
    "minutes": int,
    "tags": list,
    "language": str,
    "world": str,
    "smtp_domain": str,
    "pop3_domain": str,
}
REQUIRED = ("id", "title", "protocol")


class LessonError(Exception):
    """A lesson that cannot be used: `file:line: what is wrong`."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark").use(front_matter_plugin)
    for name in ("step", "hint", "explain"):
        md.use(container_plugin, name)
    return md


_MD = _markdown()


def language_of(path: Path) -> str:
    """`name.md` is English, `name.zh.md` Chinese."""
    suffixes = path.name.split(".")
    return suffixes[-2] if len(suffixes) > 2 and suffixes[-2] in LANGUAGES else "en"


def parse_lesson(path: Path) -> Lesson:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise LessonError(path, None, f"cannot read lesson: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise LessonError(path, None, "lesson is not UTF-8 text") from None
    return parse_lesson_text(text, path)


def parse_lesson_text(text: str, path: Path) -> Lesson:
    if not text.strip():
        raise LessonError(path, None, "lesson file is empty")
    lines = text.splitlines()
    tokens = _MD.parse(text)
    if not tokens or tokens[0].type != "front_matter":
        raise LessonError(path, 1, "a lesson starts with front matter between --- lines (id, title, protocol ...)")
    meta, meta_lines = _front_matter(tokens[0].content, path)

    steps: list[Step] = []
    intro_end = len(lines)
    index = 1
    while index < len(tokens):
        token = tokens[index]
        if token.type == "container_step_open":
            intro_end = min(intro_end, token.map[0])
            step, index = _step(tokens, index, lines, path)
            if any(s.id == step.id for s in steps):
                raise LessonError(path, step.line, f"step id {step.id!r} is used twice")
            steps.append(step)
            continue
        if token.type.startswith("container_") and token.nesting == 1:
            kind = token.type[len("container_") : -len("_open")]
            raise LessonError(path, token.map[0] + 1, f"::: {kind} belongs inside a :::: step block")
        if token.type == "fence" and token.info.strip() in ("expect", "solution"):
            raise LessonError(path, token.map[0] + 1, f"```{token.info.strip()} belongs inside a :::: step block")
        if token.type == "inline" and token.content.lstrip().startswith(":::"):
            raise LessonError(path, token.map[0] + 1, f"unknown block {token.content.split()[0]!r}: use step, hint or explain")
        index += 1
    if not steps:
        raise LessonError(path, tokens[0].map[1] + 1, "a lesson needs at least one :::: step block")

    start = tokens[0].map[1]
    intro = "\n".join(lines[start:intro_end]).strip()
    first_heading = re.search(r"^#\s+(.+)$", intro, re.MULTILINE)
    return Lesson(
        id=meta["id"],
        title=meta["title"] or (first_heading.group(1) if first_heading else meta["id"]),
        summary=meta.get("summary", ""),
        protocol=meta["protocol"],
        profile=meta.get("profile", "rfc"),
        profile_overrides=meta.get("profile_overrides", {}),
        accounts=tuple(str(a) for a in meta.get("accounts", [])),
        mail=tuple(meta.get("mail", [])),
        variables={str(k): str(v) for k, v in meta.get("vars", {}).items()},
        prerequisites=tuple(str(p) for p in meta.get("prerequisites", [])),
        minutes=int(meta.get("minutes", 5)),
        tags=tuple(str(t) for t in meta.get("tags", [])),
        language=meta.get("language", language_of(path)),
        intro=intro,
        steps=tuple(steps),
        path=path,
        front_matter_lines=meta_lines,
        world=meta.get("world", ""),
        smtp_domain=meta.get("smtp_domain", ""),
        pop3_domain=meta.get("pop3_domain", ""),
    )


def _front_matter(content: str, path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        node = yaml.compose(content, Loader=yaml.SafeLoader)
        data = yaml.safe_load(content)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(error, "problem", None) or str(error)
        raise LessonError(path, line, f"front matter is not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise LessonError(path, 2, "front matter must be `key: value` lines")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines[str(key_node.value)] = key_node.start_mark.line + 2
    for key, value in data.items():
        line = lines.get(str(key), 2)
        expected = _FRONT_MATTER.get(str(key))
        if expected is None:
            raise LessonError(path, line, f"unknown front matter key {key!r} (known: {', '.join(_FRONT_MATTER)})")
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise LessonError(path, line, f"{key} must be a {expected.__name__}, got {value!r}")
    for key in REQUIRED:
        if key not in data:
            raise LessonError(path, 1, f"front matter needs {key!r}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9\-_]*", data["id"]):
        raise LessonError(path, lines.get("id", 2), f"id {data['id']!r} must be lower-case letters, digits, - or _")
    if data["protocol"] not in PROTOCOLS:
        raise LessonError(path, lines.get("protocol", 2), f"protocol must be one of {', '.join(PROTOCOLS)}")
    if "language" in data and data["language"] not in LANGUAGES:
        raise LessonError(path, lines.get("language", 2), f"language must be one of {', '.join(LANGUAGES)}")
    for index, account in enumerate(data.get("accounts", [])):
        if not isinstance(account, str) or ":" not in account or "@" not in account.split(":")[0]:
            raise LessonError(path, lines.get("accounts", 2), f"account #{index + 1} must be \"address:secret\"")
    for index, mail in enumerate(data.get("mail", [])):
        if not isinstance(mail, dict) or "to" not in mail or not ({"body", "subject", "content"} & set(mail)):
            raise LessonError(path, lines.get("mail", 2), f"mail #{index + 1} needs `to` and a subject/body (or content)")
    data.setdefault("title", "")
    return data, lines


def _step(tokens: list[Any], index: int, lines: list[str], path: Path) -> tuple[Step, int]:
    opening = tokens[index]
    line = opening.map[0] + 1
    raw_open = lines[opening.map[0]].lstrip()
    if not raw_open.startswith("::::"):
        raise LessonError(path, line, "open a step with four colons (:::: step ID) so the ::: blocks inside do not close it")
    words = opening.info.split()
    if len(words) < 2:
        raise LessonError(path, line, "a step needs an id: `:::: step send-mail`")
    step_id, options = words[1], set(words[2:])
    if not _STEP_ID.fullmatch(step_id):
        raise LessonError(path, line, f"step id {step_id!r} must be lower-case letters, digits, - or _")
    unknown = options - STEP_OPTIONS
    if unknown:
        raise LessonError(path, line, f"unknown step option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(STEP_OPTIONS))})")

    checks: list[CheckGroup] = []
    hints: list[str] = []
    explanations: list[Explanation] = []
    solution: tuple[str, ...] = ()
    solution_line = None
    excluded: list[tuple[int, int]] = []
    depth = 1
    index += 1
    while index < len(tokens) and depth:
        token = tokens[index]
        if token.type == "container_step_open":
            raise LessonError(path, token.map[0] + 1, "steps cannot be nested: close the previous step with ::::")
        if token.type in ("container_hint_open", "container_explain_open"):
            start, end = token.map  # markdown-it's container map stops before the closing marker
            excluded.append((start, end + 1))
            body = "\n".join(lines[start + 1 : end]).strip()
            if token.type == "container_hint_open":
                if not body:
                    raise LessonError(path, start + 1, "empty hint")
                hints.append(body)
            else:
                key = token.info.split()[1:] if len(token.info.split()) > 1 else []
                if len(key) != 1 or not re.fullmatch(r"(?:[2-5][0-9x]{2}|\+OK|-ERR|diagnostic:[a-z0-9\-_.]+)", key[0], re.IGNORECASE):
                    raise LessonError(path, start + 1, "explain needs one key: a reply code (503, 5xx), +OK/-ERR, or diagnostic:<id>")
                explanations.append(Explanation(key[0], body, start + 1))
            index = _skip_container(tokens, index)
            continue
        if token.type == "fence" and token.info.strip() in ("expect", "solution"):
            start, end = token.map
            excluded.append((start, end))
            if token.info.strip() == "expect":
                checks.append(_expect_block(token.content, start + 2, path, start + 1))
            else:
                if solution:
                    raise LessonError(path, start + 1, "a step has one ```solution block")
                solution = tuple(token.content.rstrip("\n").split("\n")) if token.content.strip() else ()
                solution_line = start + 1
                if not solution:
                    raise LessonError(path, start + 1, "empty solution")
        elif token.type == "fence" and token.info.strip().startswith(("expect", "solution")):
            raise LessonError(path, token.map[0] + 1, f"unknown block ```{token.info.strip()}")
        if token.type.endswith("_open") and token.type.startswith("container_step"):
            depth += 1
        if token.type == "container_step_close":
            depth -= 1
        index += 1
    closing_line = opening.map[1]
    if not checks:
        raise LessonError(path, line, f"step {step_id!r} has no ```expect block: how would the learner know it is done?")
    prose_lines = []
    for number in range(opening.map[0] + 1, closing_line):
        if any(start <= number < end for start, end in excluded):
            continue
        prose_lines.append(lines[number])
    prose = "\n".join(prose_lines).strip()
    heading = re.search(r"^#{1,6}\s+(.+)$", prose, re.MULTILINE)
    return (
        Step(
            id=step_id,
            title=heading.group(1).strip() if heading else step_id,
            prose=prose,
            checks=tuple(checks),
            hints=tuple(hints),
            explanations=tuple(explanations),
            solution=solution,
            line=line,
            options=frozenset(options),
            solution_line=solution_line,
        ),
        index,
    )


def _skip_container(tokens: list[Any], index: int) -> int:
    depth = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type.startswith("container_"):
            depth += token.nesting
            if depth == 0:
                return index + 1
        index += 1
    return index


_FACTS = re.compile(
    r"^(?:tls|greeted|authenticated(?: as .+)?|recipients \d+|sender .+|state [A-Za-z_\-]+|deleted \d+|"
    r"retrieved \d+|accepted \d+|data|closed)$",
    re.IGNORECASE,
)
#: Record types `! dns asked` and `@dig` know: those the world's DNS serves.
DNS_QUESTION_TYPES = ("MX", "A", "AAAA", "TXT", "NS", "SOA")

_SERVER_FACTS = re.compile(
    r'^(?:mailbox \S+ (?:has (?:subject|body|header) ".*"|count \d+|has mail from \S+ over \d+ hops?|has bounce(?: for \S+)?)'
    r"|queue \S+ count \d+|dns asked (?:" + "|".join(DNS_QUESTION_TYPES) + r") \S+)$",
    re.IGNORECASE,
)
_REPLY = re.compile(r"^(?:[2-5][0-9x]{2}(?:[ -].*)?|\+OK.*|-ERR.*|\+(?: .*)?|closed)$", re.IGNORECASE)


def _expect_block(content: str, first_line: int, path: Path, block_line: int) -> CheckGroup:
    expectations = []
    for offset, raw in enumerate(content.split("\n")):
        line_number = first_line + offset
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        marker, rest = text[0], text[1:].strip()
        if marker == ">":
            if not rest:
                raise LessonError(path, line_number, "`>` needs the line the learner sends")
            expectations.append(Expectation("send", rest, line_number))
        elif marker == "<":
            if not _REPLY.match(rest):
                raise LessonError(path, line_number, f"`<` needs a reply code like 250, 2xx, 5xx, +OK or -ERR, got {rest!r}")
            expectations.append(Expectation("reply", rest, line_number))
        elif marker == "?":
            if not _FACTS.match(rest):
                raise LessonError(
                    path, line_number,
                    f"unknown session fact {rest!r} (tls, greeted, authenticated [as X], recipients N, sender X, "
                    "state NAME, deleted N, retrieved N, accepted N, data, closed)",
                )
            expectations.append(Expectation("fact", rest, line_number))
        elif marker == "!":
            if not _SERVER_FACTS.match(rest):
                raise LessonError(
                    path, line_number,
                    f'unknown server fact {rest!r} (mailbox X has subject|body|header "..." , mailbox X count N, '
                    "mailbox X has mail from Y over N hops, mailbox X has bounce [for Y], queue DOMAIN count N, "
                    f"dns asked {'|'.join(DNS_QUESTION_TYPES)} NAME)",
                )
            expectations.append(Expectation("server", rest, line_number))
        else:
            raise LessonError(path, line_number, f"expect lines start with >, <, ? or !, got {text!r}")
    if not expectations:
        raise LessonError(path, block_line, "empty ```expect block")
    return CheckGroup(tuple(expectations), block_line)
