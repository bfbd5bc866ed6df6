"""`maillab classroom watch`: the instructor's live view of the class.

One row per student (connected, lesson step, last command and reply, errors, time stuck), the
class's counters on top, the most frequent errors below; Enter on a row follows that student's
transcript live. The transcripts are read in a worker thread once a second (`set_interval`);
the UI thread only copies what the reader prepared.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from simulator.course.model import Lesson

from .config import ClassConfig
from .tracker import ClassSnapshot, ClassTracker, StudentRow

#: A student without progress for this long is shown in red (yellow after half of it).
STUCK_WARNING = 300.0

COLUMNS = (
    ("student", "student"),
    ("on", "on"),
    ("step", "step"),
    ("command", "last command"),
    ("reply", "last reply"),
    ("errors", "err"),
    ("stuck", "stuck"),
)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def row_cells(row: StudentRow, lesson: Lesson | None, now: float) -> dict[str, Any]:
    """The cells of one student's row (plain text inside Rich Text, so tests read them easily)."""
    if row.problem:
        step = Text(f"! {_cut(row.problem, 30)}", style="bold red")
    elif lesson is None:
        step = Text("-")
    elif row.finished:
        step = Text(f"{row.completed}/{row.total} done", style="bold green")
    else:
        step = Text(f"{row.completed}/{row.total} {row.current_step or ''}")
    stuck_for = None if row.stuck_since is None else now - row.stuck_since
    stuck_style = ""
    if stuck_for is not None and stuck_for >= STUCK_WARNING:
        stuck_style = "bold red"
    elif stuck_for is not None and stuck_for >= STUCK_WARNING / 2:
        stuck_style = "yellow"
    reply_style = "red" if row.last_reply[:1] in ("4", "5") or row.last_reply.startswith("-ERR") else ""
    return {
        "student": Text(row.id),
        "on": Text("●" if row.connected else "·", style="green" if row.connected else "dim"),
        "step": step,
        "command": Text(_cut(row.last_command, 32)),
        "reply": Text(_cut(row.last_reply, 40), style=reply_style),
        "errors": Text(str(row.errors), style="red" if row.errors else "dim"),
        "stuck": Text(duration(stuck_for), style=stuck_style),
    }


class StudentScreen(Screen[None]):
    """One student's transcript, followed live (all their sessions, in order)."""

    BINDINGS = [("escape", "app.pop_screen", "Back"), ("q", "app.pop_screen", "Back")]

    def __init__(self, tracker: ClassTracker, student_id: str, interval: float = 1.0) -> None:
        super().__init__()
        self.tracker = tracker
        self.student_id = student_id
        self.interval = interval
        self.shown = 0
        self.generation: int | None = None
        self.plain_lines: list[str] = []

    def compose(self) -> ComposeResult:
        student = self.tracker.config.student(self.student_id)
        yield Header()
        addresses = f"{student.address}  {student.other_address}" if student.other_address else student.address
        yield Static(f"{student.id}  {addresses}  (Esc: back to the class)", id="student-title")
        yield RichLog(id="student-log", wrap=True, markup=False, highlight=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_lines()
        self.set_interval(self.interval, self.refresh_lines)

    def refresh_lines(self) -> None:
        result = self.tracker.lines(self.student_id, self.shown, self.generation)
        if result is None:
            return  # the reader is busy: next tick
        generation, lines = result
        log = self.query_one(RichLog)
        if generation != self.generation:
            log.clear()
            self.plain_lines = []
            self.shown = 0
            self.generation = generation
        for line in lines:
            style = "bold cyan" if " › " in line else "green" if " ‹ " in line else "italic magenta"
            if " ‹ " in line and (line.split(" ‹ ", 1)[1][:1] in ("4", "5") or " ‹ -ERR" in line):
                style = "bold red"
            log.write(Text(line, style=style))
            self.plain_lines.append(line)
        del self.plain_lines[:-5000]  # as many as the log keeps
        self.shown += len(lines)


class ClassroomApp(App[None]):
    TITLE = "maillab classroom"
    CSS = """
    #class-summary { height: auto; padding: 0 1; background: $boost; }
    #students { height: 1fr; }
    #class-errors { height: auto; max-height: 7; padding: 0 1; color: $text-muted; }
    #student-title { height: auto; padding: 0 1; background: $boost; }
    #student-log { height: 1fr; }
    """
    BINDINGS = [("q", "quit", "Quit"), ("ctrl+q", "quit", "Quit")]

    def __init__(
        self,
        config: ClassConfig,
        lesson: Lesson | None = None,
        *,
        interval: float = 1.0,
        tracker: ClassTracker | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.lesson = lesson
        self.interval = interval
        self.tracker = tracker or ClassTracker(config, lesson)
        self.snapshot: ClassSnapshot | None = None
        self.polls = 0
        self._polling = False
        self.sub_title = f"{config.dir}" + (f" · {lesson.id}" if lesson else "")

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("reading the transcripts…", id="class-summary")
        yield DataTable(id="students", cursor_type="row", zebra_stripes=True)
        yield Static("", id="class-errors")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        for student in self.config.students:
            table.add_row(*(Text(student.id) if key == "student" else Text("") for key, _ in COLUMNS), key=student.id)
        table.focus()
        self.poll()
        self.set_interval(self.interval, self.poll)

    # --- reading (worker thread) ---------------------------------------------------------------

    def poll(self) -> None:
        if self._polling:
            return  # the previous read is still running: skip this tick
        self._polling = True
        self.run_worker(self._read, thread=True, group="poll", exit_on_error=False)

    def _read(self) -> None:
        snapshot: ClassSnapshot | None = None
        problem = None
        try:
            snapshot = self.tracker.poll()
        except Exception as error:  # a damaged file must not kill the dashboard
            problem = f"{type(error).__name__}: {error}"
        try:
            self.call_from_thread(self.show, snapshot, problem)
        except RuntimeError:
            pass  # the app is closing

    # --- showing (UI thread) -------------------------------------------------------------------

    def show(self, snapshot: ClassSnapshot | None, problem: str | None = None) -> None:
        self._polling = False
        self.polls += 1
        if snapshot is None:
            self.query_one("#class-summary", Static).update(f"cannot read the transcripts: {problem}")
            return
        self.snapshot = snapshot
        table = self.query_one(DataTable)
        now = time.time()
        for row in snapshot.students:
            for key, value in row_cells(row, self.lesson, now).items():
                table.update_cell(row.id, key, value)
        self.query_one("#class-summary", Static).update(self.summary_text(snapshot))
        errors = ", ".join(f"{text} ×{count}" for text, count in snapshot.top_errors) or "none"
        self.query_one("#class-errors", Static).update(f"most frequent errors: {errors}")

    def summary_text(self, snapshot: ClassSnapshot) -> str:
        count = len(snapshot.students)
        parts = [f"{snapshot.connected}/{count} connected", f"{snapshot.mails_sent} mails sent"]
        if self.lesson is not None:
            done = sum(1 for row in snapshot.students if row.finished)
            parts.insert(0, f"lesson {self.lesson.id}: {done}/{count} done")
        if snapshot.unattributed:
            parts.append(f"{snapshot.unattributed} sessions not yet attributed")
        return " · ".join(parts)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        student_id = str(event.row_key.value)
        self.push_screen(StudentScreen(self.tracker, student_id, self.interval))
