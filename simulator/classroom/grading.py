"""`maillab classroom grade`: which steps of a lesson each student completed, judged from the
server's side (its transcripts and Maildirs), never from what a student's client reports."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from simulator.course.model import Lesson

from .config import ClassConfig
from .tracker import ClassTracker


@dataclass(frozen=True)
class StudentGrade:
    id: str
    address: str
    completed: tuple[str, ...]  # step ids, in lesson order
    total: int
    sessions: int
    errors: int
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return len(self.completed) >= self.total

    @property
    def started(self) -> bool:
        return self.sessions > 0


@dataclass(frozen=True)
class GradeReport:
    config: ClassConfig
    lesson: Lesson
    students: tuple[StudentGrade, ...]

    @property
    def steps(self) -> list[str]:
        return [step.id for step in self.lesson.steps]

    def summary(self) -> str:
        total = len(self.lesson.steps)
        count = len(self.students)
        complete = sum(1 for s in self.students if s.complete)
        partial = sum(1 for s in self.students if s.completed and not s.complete)
        nothing = count - complete - partial
        absent = sum(1 for s in self.students if not s.started)
        mean = sum(len(s.completed) for s in self.students) / count if count else 0.0
        return (
            f"class: {count} students, {complete} complete, {partial} partial, {nothing} with no step "
            f"({absent} never connected); mean {mean:.1f}/{total} steps of {self.lesson.id}"
        )


def grade_class(config: ClassConfig, lesson: Lesson) -> GradeReport:
    """Replay every student's sessions (time order, each whole) through the lesson runner."""
    tracker = ClassTracker(config, lesson, live=False)
    tracker.poll()
    tracker.replay_all()
    grades = []
    for state in tracker.students.values():
        progress = state.progress
        assert progress is not None
        done = set(progress.best.completed_steps())
        grades.append(
            StudentGrade(
                id=state.student.id,
                address=state.student.address,
                completed=tuple(step.id for step in lesson.steps if step.id in done),
                total=len(lesson.steps),
                sessions=len(state.sessions),
                errors=state.errors,
                problem=progress.problem,
            )
        )
    return GradeReport(config, lesson, tuple(grades))


def format_csv(report: GradeReport) -> str:
    """One row per student: id, address, completed, total, then 1/0 per step (summary not included)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "address", "completed", "total", *report.steps, "sessions", "errors"])
    for grade in report.students:
        done = set(grade.completed)
        writer.writerow(
            [grade.id, grade.address, len(grade.completed), grade.total, *(1 if s in done else 0 for s in report.steps),
             grade.sessions, grade.errors]
        )
    return out.getvalue()


def format_md(report: GradeReport) -> str:
    lesson = report.lesson
    lines = [
        f"# {lesson.id}: {lesson.title}",
        "",
        f"Class `{report.config.dir}`, graded from the server's transcripts and mailboxes.",
        "",
        "| student | address | done | " + " | ".join(report.steps) + " | errors |",
        "|---|---|---|" + "---|" * len(report.steps) + "---|",
    ]
    for grade in report.students:
        done = set(grade.completed)
        marks = " | ".join("✓" if step in done else "·" for step in report.steps)
        lines.append(f"| {grade.id} | {grade.address} | {len(grade.completed)}/{grade.total} | {marks} | {grade.errors} |")
    problems = [g for g in report.students if g.problem]
    if problems:
        lines += ["", *(f"- {g.id}: could not be checked: {g.problem}" for g in problems)]
    lines += ["", report.summary()]
    return "\n".join(lines) + "\n"
