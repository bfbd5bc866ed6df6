"""`maillab lint` for lessons: structure, ids, translations, placeholders, reply codes, profile
references, teaching order (course/order.py), then a replay of each reference solution against
fresh embedded servers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mockservers import schema
from mockservers.lint import Problem
from simulator.defaults import DEFAULT_REPLAY_JOBS

from .catalog import Catalog, load_catalog
from .model import Lesson
from .order import check_order
from .parser import DNS_QUESTION_TYPES, LessonError
from .patterns import PatternError, check_solution_line, compile_pattern
from .setup import lesson_profile, lesson_variables


def _problem(path: Path | str, line: int | None, message: str, severity: str = "error") -> Problem:
    return Problem(str(path), line, message, severity)


def check_lesson(lesson: Lesson, catalog: Catalog, extra_dirs: Sequence[Path] = ()) -> list[Problem]:
    """Everything that can be known without running servers."""
    problems: list[Problem] = []
    try:
        profile = lesson_profile(lesson, extra_dirs)
    except LessonError as error:
        return [_problem(error.path, error.line, error.message)]
    variables = lesson_variables(lesson, profile)
    for prerequisite in lesson.prerequisites:
        if prerequisite not in catalog.lessons:
            problems.append(_problem(lesson.path, lesson.line_of("prerequisites"), f"prerequisite {prerequisite!r} is not a known lesson id"))
    for step in lesson.steps:
        if not step.hints:
            problems.append(_problem(lesson.path, step.line, f"step {step.id!r} has no ::: hint", "warning"))
        for group in step.checks:
            last_verb = None
            for expectation in group.expectations:
                if expectation.kind == "send":
                    try:
                        compile_pattern(expectation.text, variables)
                    except PatternError as error:
                        problems.append(_problem(lesson.path, expectation.line, str(error)))
                    last_verb = expectation.text.split()[0].upper() if expectation.text.split() else None
                elif expectation.kind == "reply" and lesson.protocol != "pop3" and last_verb:
                    code = expectation.text[:3]
                    if code.isdigit() and last_verb in schema.ALLOWED_CODES and not schema.smtp_code_fits(last_verb, int(code)):
                        problems.append(
                            _problem(lesson.path, expectation.line, f"reply {code} can never answer {last_verb} (RFC 5321 4.3.2)")
                        )
                elif expectation.kind in ("fact", "server"):
                    try:
                        from .patterns import substitute_variables

                        substitute_variables(expectation.text, variables)
                    except PatternError as error:
                        problems.append(_problem(lesson.path, expectation.line, str(error)))
                    if expectation.kind == "server" and expectation.text.lower().startswith("dns asked") and not lesson.world:
                        problems.append(_problem(lesson.path, expectation.line, "`! dns asked` needs a world lesson (`world:` in the front matter)"))
        for offset, line in enumerate(step.solution):
            if line.startswith("@"):
                words = line.split()
                where = (step.solution_line or step.line) + 1 + offset
                if words[0] == "@dig":
                    if len(words) != 3 or words[1].upper() not in DNS_QUESTION_TYPES:
                        problems.append(_problem(lesson.path, where, f"@dig needs a record type ({', '.join(DNS_QUESTION_TYPES)}) and a name: {line!r}"))
                    elif not lesson.world:
                        problems.append(_problem(lesson.path, where, "@dig asks a world's DNS: only in a lesson with `world:` in its front matter"))
                elif words[0] not in ("@connect", "@wait") or len(words) != 2:
                    problems.append(_problem(lesson.path, where, f"unknown directive {line!r} (@connect smtp|pop3, @wait SECONDS, @dig TYPE NAME)"))
                continue
            try:
                check_solution_line(line, variables)
            except PatternError as error:
                problems.append(_problem(lesson.path, (step.solution_line or step.line) + 1 + offset, str(error)))
    return problems


def check_translations(catalog: Catalog) -> list[Problem]:
    """`name.md` and `name.zh.md` must share steps (ids, order) and checks."""
    problems = []
    for lesson_id, versions in catalog.lessons.items():
        english = versions.get("en")
        for language, lesson in versions.items():
            if language == "en" or english is None:
                continue
            ours = [s.id for s in lesson.steps]
            theirs = [s.id for s in english.steps]
            if ours != theirs:
                problems.append(
                    _problem(lesson.path, lesson.steps[0].line if lesson.steps else 1,
                             f"steps {ours} differ from {english.path.name}'s {theirs}")
                )
                continue
            for step, original in zip(lesson.steps, english.steps):
                mine = [[(e.kind, e.text) for e in g.expectations] for g in step.checks]
                other = [[(e.kind, e.text) for e in g.expectations] for g in original.checks]
                if mine != other:
                    problems.append(_problem(lesson.path, step.line, f"step {step.id!r}: checks differ from {english.path.name} line {original.line}"))
                if len(step.hints) != len(original.hints):
                    problems.append(_problem(lesson.path, step.line, f"step {step.id!r}: {len(step.hints)} hints, {english.path.name} has {len(original.hints)}", "warning"))
        if english is None:
            lesson = next(iter(versions.values()))
            problems.append(_problem(lesson.path, 1, f"lesson {lesson_id!r} has no English version (name.md)", "warning"))
    return problems


@dataclass
class LintReport:
    problems: list[Problem]
    lessons_checked: int

    @property
    def errors(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for p in self.problems if p.severity != "error")


def lint_lessons(
    paths: Sequence[Path] = (), extra_dirs: Sequence[Path] = (), *, replay: bool = True, jobs: int = DEFAULT_REPLAY_JOBS
) -> LintReport:
    """Lint the given files/folders, or every bundled lesson (and `extra_dirs`) when none."""
    if paths:
        catalog = load_catalog([*extra_dirs, *paths], include_bundled=True)
        wanted = {Path(p).resolve() for p in paths}

        def selected(lesson: Lesson) -> bool:
            resolved = lesson.path.resolve()
            return any(resolved == w or w in resolved.parents for w in wanted)
    else:
        catalog = load_catalog(extra_dirs)

        def selected(lesson: Lesson) -> bool:
            return True

    problems = [_problem(e.path, e.line, e.message) for e in catalog.errors
                if not paths or any(Path(e.path).resolve() == Path(p).resolve() or Path(p).resolve() in Path(e.path).resolve().parents for p in paths)]
    chosen = [lesson for versions in catalog.lessons.values() for lesson in versions.values() if selected(lesson)]
    structural: dict[Path, list[Problem]] = {}
    for lesson in chosen:
        structural[lesson.path] = check_lesson(lesson, catalog, extra_dirs)
        problems += structural[lesson.path]
    problems += [p for p in check_translations(catalog) if any(Path(p.file) == lesson.path for lesson in chosen)]
    problems += [p for p in check_order(catalog) if any(Path(p.file) == lesson.path for lesson in chosen)]
    if replay:
        runnable = [lesson for lesson in chosen if not any(p.severity == "error" for p in structural[lesson.path])]
        problems += asyncio.run(_replay_all(runnable, extra_dirs, jobs))
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return LintReport(problems, len(chosen) + len({e.path for e in catalog.errors}))


async def _replay_all(lessons: list[Lesson], extra_dirs: Sequence[Path], jobs: int = DEFAULT_REPLAY_JOBS) -> list[Problem]:
    """Replay `jobs` lessons at a time: a replay mostly waits (for the server's delays, for
    `@wait`), so a few at once finish the course several times sooner on any machine. Each has
    its own servers, ports and data directory, so they cannot see each other."""
    from .replay import replay

    slots = asyncio.Semaphore(max(1, jobs))

    async def one(lesson: Lesson) -> Problem | None:
        async with slots:
            result = await replay(lesson, extra_dirs)
        if result.ok:
            return None
        return _problem(lesson.path, result.line, f"solution replay failed: {result.message}")

    results = await asyncio.gather(*(one(lesson) for lesson in lessons))
    return [problem for problem in results if problem is not None]
