"""The lesson driver's public API: what `LessonRun` reports as events, and that no module
outside `simulator/course/runner.py` reaches into its private state (read with `ast`, like
tests/test_import_graph.py, so a new driver cannot quietly start polling `_awaiting` again)."""

from __future__ import annotations

import ast
from pathlib import Path

from import_graph import ROOT
from test_course_engine import run_for

from simulator.course.runner import (
    ConnectionClosed,
    HintShown,
    LessonFinished,
    Reconnected,
    ReplyReceived,
    StepCompleted,
    StepFailed,
)

RUNNER = ROOT / "simulator" / "course" / "runner.py"
SCANNED = ("mailprotocol", "mockservers", "simulator", "lessons", "tests")


def test_the_run_reports_steps_failures_hints_and_the_end(tmp_path):
    run = run_for(tmp_path)
    heard: list[object] = []
    stop = run.subscribe(heard.append)
    run.received(["220 mail.example.com ESMTP Postfix"])
    assert isinstance(heard[0], ReplyReceived) and heard[0].step == "greet"
    heard.clear()
    run.sent("EHOL x")
    run.received(["500 5.5.2 Error: command not recognized"])
    run.sent("EHLO")
    run.received(["501 5.5.4 Syntax: EHLO hostname"])
    failures = [e for e in heard if not isinstance(e, ReplyReceived)]
    assert failures == [StepFailed("greet", 1), StepFailed("greet", 2), HintShown("greet", 1, automatic=True)]
    heard.clear()
    run.next_hint()
    assert heard == [HintShown("greet", 2, automatic=False)]
    heard.clear()
    run.sent("EHLO a.example")
    run.received(["250-mail.example.com", "250 PIPELINING"])
    assert [e for e in heard if not isinstance(e, ReplyReceived)] == [StepCompleted("greet")]
    heard.clear()
    run.reconnect("smtp")
    run.closed()
    assert heard == [Reconnected("smtp"), ConnectionClosed()]
    heard.clear()
    for _ in run.lesson.steps:
        run.skip_step()
    skipped = [e.step for e in heard if isinstance(e, StepCompleted) and e.skipped]
    assert skipped == [step.id for step in run.lesson.steps[1:]] and heard[-1] == LessonFinished()
    stop()
    run.received(["250 late"])
    assert heard[-1] == LessonFinished()  # nothing after unsubscribing


def test_a_kept_session_model_is_resumed_with_its_state(tmp_path):
    """Watch mode: two connections take turns; each keeps its own session model."""
    run = run_for(tmp_path)
    run.received(["220 one"])
    run.sent("EHLO one.example")
    run.received(["250 one"])
    first = run.session
    run.reconnect("smtp", implicit_tls=True)
    assert run.session is not first and run.session.tls_active and run.session.helo_domain is None
    heard: list[object] = []
    run.subscribe(heard.append)
    run.resume(first)
    assert run.session is first and first.helo_domain == "one.example" and heard == [Reconnected("smtp", resumed=True)]


def lesson_run_privates() -> set[str]:
    """Names of LessonRun's private methods and attributes (`_x`, never dunders)."""
    tree = ast.parse(RUNNER.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "LessonRun":
            for inner in ast.walk(node):
                if isinstance(inner, ast.FunctionDef):
                    names.add(inner.name)
                elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.value.id == "self":
                    names.add(inner.attr)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def own_privates(tree: ast.Module) -> set[str]:
    """Private names the module's own classes define (methods, `self._x = ...`, dataclass fields)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or any(ast.unparse(b).split(".")[-1] == "LessonRun" for b in node.bases):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.FunctionDef):
                names.add(inner.name)
            elif (
                isinstance(inner, ast.Attribute) and isinstance(inner.ctx, ast.Store)
                and isinstance(inner.value, ast.Name) and inner.value.id == "self"
            ):
                names.add(inner.attr)
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                names.add(statement.target.id)
    return names


def private_uses(source: str, privates: set[str]) -> list[tuple[int, str]]:
    """(line, code) for each use of a LessonRun private outside its class.

    A module whose own classes define the same private name (a fault rule's `_pattern`, a
    session's `_pending`) is using its own attribute there; in a subclass of LessonRun,
    `self._x` is the runner's, and counts.
    """
    tree = ast.parse(source)
    privates = privates - own_privates(tree)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_subclass: bool) -> None:
        if isinstance(node, ast.ClassDef):
            in_subclass = any(ast.unparse(base).split(".")[-1] == "LessonRun" for base in node.bases)
        if isinstance(node, ast.Attribute) and node.attr in privates:
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if in_subclass or not own:
                found.append((node.lineno, ast.unparse(node)))
        for child in ast.iter_child_nodes(node):
            visit(child, in_subclass)

    visit(tree, False)
    return found


def test_the_scan_finds_reaching_in():
    privates = lesson_run_privates()
    assert {"_awaiting", "_resume", "_evaluate", "_emit"} <= privates
    code = (
        "run._awaiting.clear()\n"
        "class Session:\n    def f(self):\n        return self._awaiting\n"
        "class Mine(LessonRun):\n    def f(self):\n        return self._resume\n"
        "class Rule:\n    _pattern: object = None\nrule._pattern\n"
    )
    assert private_uses(code, privates) == [(1, "run._awaiting"), (7, "self._resume")]


def test_no_module_outside_the_runner_touches_its_private_state():
    privates = lesson_run_privates()
    problems = []
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == RUNNER or "snapshots" in path.parts:
                continue
            for line, code in private_uses(path.read_text(encoding="utf-8"), privates):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {code} (use LessonRun's public API or its events)")
    assert problems == [], "\n".join(problems)
