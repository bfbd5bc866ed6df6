"""Follow a class's transcripts and say, per student, what they are doing.

The server writes one JSON-lines transcript per session (DATA/transcripts/<date>/<session>.jsonl).
`ClassTracker.poll()` reads what was appended since the last call (`transcripts.follow` with
offsets; closed sessions are never read again), gives each session to a student, and feeds the
student's sessions through the lesson runner:

* a session belongs to the student it authenticated as (the server's "authenticated" event);
  without AUTH, to the student named by its first `MAIL FROM:` (SMTP) or `USER`/`APOP` (POP3)
  line; a later successful login moves it. A session with neither (EHLO and QUIT) goes to the
  student whose other sessions come from the same client address, when exactly one does (one
  machine per student); otherwise it stays unattributed;
* a student's sessions are replayed in the order they started, each one whole (a new
  connection is `reconnect()`), server lines through `received()`, client lines through
  `sent()`; AUTH secrets are `***` in transcripts, so the runs accept redacted lines;
* `! mailbox` facts read the class's Maildirs (the server's side, not the student's claims).

A world class (`classroom init --world`) has a transcript folder per domain
(DATA/<domain>/transcripts/): all are followed, a student's sessions on both domains are theirs,
and the sessions of the world's own relays (from and to the domains' loopback addresses: a relay
delivering, an MX receiving) belong to nobody. Facts read the mailbox on its own domain.

Live, records are fed as they arrive; a record that would break the start order (a second
session of the same student talking while a later one is open) replays that student from the
start instead, so the dashboard always shows what `maillab classroom grade` would say.

No Textual, no Twisted: the dashboard calls `poll()` from a worker thread, grading once.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mockservers.output import safe_text
from mockservers.transcripts import follow
from simulator.course.model import Lesson
from simulator.course.runner import LessonFinished, LessonRun, StepCompleted, StoreFacts, reply_matches
from simulator.course.setup import lesson_variables

from .config import ClassConfig, Student, class_profile, class_world
from .variables import student_variables, uses_variable, world_variables

_SMTP_FINAL = re.compile(r"^([2-5]\d\d)(?: |$)")
_SMTP_ERROR = re.compile(r"^[45]\d\d(?: |$)")
_ADDRESS_IN_REPLY = re.compile(r"<[^<>]*>")


@dataclass
class SessionLog:
    """One transcript file, as far as it has been read."""

    id: str
    path: Path
    offset: int = 0
    protocol: str = "smtp"
    peer: str = ""
    started: float = 0.0
    closed: bool = False
    records: list[dict] = field(default_factory=list)
    student: str | None = None
    how: str | None = None  # "auth" (logged in) or "ip" (the one student who logged in from there)
    relay: bool = False  # a world's relay delivering, or an MX receiving from one: nobody's session
    domain: str = ""  # a world class: the domain whose server it was (DATA/<domain>/transcripts/<day>/)

    @property
    def host(self) -> str:
        return self.peer.rpartition(":")[0].strip("[]")


@dataclass(frozen=True)
class StudentRow:
    """What the dashboard shows for one student (an immutable copy, safe across threads)."""

    id: str
    address: str
    connected: bool
    sessions: int
    completed: int
    total: int
    current_step: str | None  # None when finished or without a lesson
    last_command: str
    last_reply: str
    errors: int
    stuck_since: float | None  # last step completion, or first activity
    first_activity: float | None
    problem: str | None = None

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.completed >= self.total


@dataclass(frozen=True)
class ClassSnapshot:
    time: float
    students: tuple[StudentRow, ...]
    connected: int
    mails_sent: int
    unattributed: int
    top_errors: tuple[tuple[str, int], ...]


class CachedFacts:
    """StoreFacts read at most once per mailbox per poll (the dashboard re-checks facts often)."""

    def __init__(self, facts: StoreFacts) -> None:
        self.facts = facts
        self._mail: dict[str, list[bytes]] = {}
        self._queue: dict[str, int] = {}

    def invalidate(self) -> None:
        self._mail.clear()
        self._queue.clear()

    def mailbox_messages(self, address: str) -> list[bytes]:
        key = address.strip().lower()
        if key not in self._mail:
            self._mail[key] = self.facts.mailbox_messages(key)
        return self._mail[key]

    def queue_count(self, domain: str) -> int:
        key = domain.strip().lower()
        if key not in self._queue:
            self._queue[key] = self.facts.queue_count(key)
        return self._queue[key]


def feed_record(run: LessonRun, record: dict) -> None:
    """One transcript record into a lesson run, the way the TUI feeds a live session."""
    direction = record.get("dir")
    if direction == "c":
        line = str(record.get("line", ""))
        if line.startswith("<BDAT chunk"):
            return  # the chunk's octets are not in the transcript; its reply still is
        run.sent(line)
    elif direction == "s":
        run.received([str(record.get("line", ""))])
    elif direction == "e":
        event = record.get("event")
        if event == "open":
            run.reconnect(str(record.get("protocol", "smtp")).lower())
        elif event == "tls":
            run.tls_started()
        elif event == "authenticated" and record.get("user"):
            run.server_authenticated(str(record["user"]))
        elif event == "close":
            run.closed()


class LessonProgress:
    """A student's runs through one lesson: one per reading of `$to` (partner, or themself)."""

    def __init__(self, lesson: Lesson, variants: list[dict[str, str]], facts: Any, run_class: type | None = None) -> None:
        run_class = run_class or LessonRun
        self.now = 0.0
        self.problem: str | None = None
        self.done = 0  # steps completed by the best run
        self.done_at: float | None = None  # when that number last grew (transcript time)
        self.runs = [
            run_class(lesson, variables, server_facts=facts, accept_redacted=True, clock=lambda: self.now)
            for variables in variants
        ]
        #: Steps each run reported completed (its events), in the order of `runs`.
        self.completed = [0] * len(self.runs)
        self.finished = [False] * len(self.runs)
        for index, run in enumerate(self.runs):
            run.subscribe(lambda event, index=index: self._heard(index, event))

    def _heard(self, index: int, event: Any) -> None:
        if isinstance(event, StepCompleted):
            self.completed[index] += 1
        elif isinstance(event, LessonFinished):
            self.finished[index] = True

    def feed(self, record: dict) -> None:
        if self.problem is not None:
            return
        try:
            self.now = float(record.get("t", self.now))
        except (TypeError, ValueError):
            pass
        try:
            for index, run in enumerate(self.runs):
                if not self.finished[index]:
                    feed_record(run, record)
        except Exception as error:  # a lesson that cannot be checked here is reported, not fatal
            self.problem = f"{type(error).__name__}: {error}"
            return
        done = max(self.completed)
        if done > self.done:
            self.done, self.done_at = done, self.now

    @property
    def best(self) -> LessonRun:
        return self.runs[self.completed.index(max(self.completed))]  # the first on a tie

    def last_completion(self) -> float | None:
        return self.done_at


class StudentState:
    """Everything known about one student, rebuilt from their sessions when order requires."""

    def __init__(self, student: Student, tracker: "ClassTracker") -> None:
        self.student = student
        self.tracker = tracker
        self.sessions: list[SessionLog] = []
        self.generation = 0
        self.dirty = False
        self.reset()

    def reset(self) -> None:
        self.fed: dict[str, int] = {}
        self.order: list[SessionLog] = []
        self.last_command = ""
        self.last_command_t = -1.0
        self.last_reply = ""
        self.last_reply_t = -1.0
        self.errors = 0
        self.first_activity: float | None = None
        self.in_data: dict[str, bool] = {}
        self.lines: list[str] = []
        self.generation += 1
        self.progress = self.tracker.new_progress(self.student)

    # --- sessions ----------------------------------------------------------------------------

    def add(self, session: SessionLog) -> None:
        if session not in self.sessions:
            self.sessions.append(session)

    def remove(self, session: SessionLog) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
            self.dirty = True

    def catch_up(self, session: SessionLog, live: bool) -> None:
        """Feed the records of `session` not fed yet (or mark a full replay when out of order)."""
        if self.dirty:
            return
        known = session.id in self.fed
        if known and self.order and self.order[-1] is not session:
            self.dirty = True  # an earlier session spoke again: replay in start order
            return
        if not known and self.order and session.started < max(s.started for s in self.order):
            self.dirty = True  # a session that started earlier was attributed late
            return
        if not known:
            self.order.append(session)
            self.fed[session.id] = 0
        start = self.fed[session.id]
        for record in session.records[start:]:
            self._feed(session, record, live)
        self.fed[session.id] = len(session.records)

    def rebuild(self, live: bool) -> None:
        """Replay every session from scratch, in the order they started, each one whole."""
        self.reset()
        self.dirty = False
        ordered = sorted(self.sessions, key=lambda s: (s.started, s.id))
        merged = sorted(((r.get("t", 0.0), n, s, r) for s in ordered for n, r in enumerate(s.records)), key=lambda x: (x[0], x[1]))
        for session in ordered:
            self.order.append(session)
            for record in session.records:
                self._feed(session, record, live, show=False)
            self.fed[session.id] = len(session.records)
        self.lines = [format_record(s, r) for _, _, s, r in merged]

    def _feed(self, session: SessionLog, record: dict, live: bool, show: bool = True) -> None:
        t = _time(record)
        if self.first_activity is None or t < self.first_activity:
            self.first_activity = t
        direction = record.get("dir")
        line = str(record.get("line", ""))
        if direction == "c":
            in_data = self.in_data.get(session.id, False)
            if in_data and line == ".":
                self.in_data[session.id] = False
            if (not in_data or line == ".") and t >= self.last_command_t:
                self.last_command, self.last_command_t = line, t
        elif direction == "s":
            if line.startswith("354"):
                self.in_data[session.id] = True
            if _SMTP_FINAL.match(line) or line.startswith(("+OK", "-ERR", "+ ")) or line == "+":
                if t >= self.last_reply_t:
                    self.last_reply, self.last_reply_t = line, t
                if _SMTP_ERROR.match(line) or line.startswith("-ERR"):
                    self.errors += 1
        if show:
            self.lines.append(format_record(session, record))
        if self.progress is not None and live:
            self.progress.feed(record)

    # --- the row -------------------------------------------------------------------------------

    def row(self) -> StudentRow:
        total = completed = 0
        current = problem = None
        stuck = self.first_activity
        progress = self.progress
        if progress is not None:
            run = progress.best
            total = len(run.progress)
            completed = progress.done
            current = run.current.step.id if run.current is not None else None
            problem = progress.problem
            done_at = progress.last_completion()
            if done_at is not None:
                stuck = done_at
            if current is None:
                stuck = None
        elif self.tracker.lesson is None:
            stuck = None
        return StudentRow(
            id=self.student.id,
            address=self.student.address,
            connected=any(not s.closed for s in self.sessions),
            sessions=len(self.sessions),
            completed=completed,
            total=total,
            current_step=current,
            last_command=safe_text(self.last_command),
            last_reply=safe_text(self.last_reply),
            errors=self.errors,
            stuck_since=stuck if self.first_activity is not None else None,
            first_activity=self.first_activity,
            problem=problem,
        )


def _time(record: dict) -> float:
    try:
        return float(record.get("t", 0.0))
    except (TypeError, ValueError):
        return 0.0


def format_record(session: SessionLog, record: dict) -> str:
    """One transcript record as a line of the follow view, control characters escaped."""
    return safe_text(_format_record(session, record))


def _format_record(session: SessionLog, record: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(_time(record)))
    protocol = session.protocol.upper() + (f"@{session.domain}" if session.domain else "")
    direction = record.get("dir")
    if direction == "c":
        return f"{stamp} {protocol} › {record.get('line', '')}"
    if direction == "s":
        return f"{stamp} {protocol} ‹ {record.get('line', '')}"
    event = record.get("event", "?")
    if event == "open":
        return f"{stamp} {protocol} · connected from {record.get('peer', '?')} ({session.id})"
    if event == "close":
        return f"{stamp} {protocol} · closed"
    detail = record.get("detail")
    return f"{stamp} {protocol} · {event}{': ' + str(detail) if detail else ''}"


class ClassTracker:
    """The class as its server's transcripts tell it; `poll()` reads what is new."""

    def __init__(self, config: ClassConfig, lesson: Lesson | None = None, *, live: bool = True) -> None:
        self.config = config
        self.lesson = lesson
        self.live = live
        self.lock = threading.RLock()
        self.world = class_world(config) if config.is_world else None
        if self.world is not None:
            self.transcripts_dirs = [config.data_dir / d.name / "transcripts" for d in self.world.domains]
        else:
            self.transcripts_dirs = [config.data_dir / "transcripts"]
        # Relays connect from a domain's own loopback address, and their own transcripts name the MX's.
        self.relay_hosts = {d.address for d in self.world.domains} if self.world is not None else set()
        self.profile = class_profile(config) if lesson is not None else None
        self.facts: CachedFacts | None = None
        if lesson is not None:
            from mockservers.store import MailStore

            if self.world is not None:
                from simulator.course.world_lab import WorldFacts

                stores = {d.name: MailStore(config.data_dir / d.name) for d in self.world.domains}
                self.facts = CachedFacts(WorldFacts(stores=stores))
            else:
                self.facts = CachedFacts(StoreFacts(MailStore(config.data_dir)))
        self.sessions: dict[str, SessionLog] = {}
        self.weak: set[str] = set()  # sessions not (yet) attributed by AUTH or by a line
        self.by_address = {s.address: s for s in config.students}
        self.by_address.update({s.other_address: s for s in config.students if s.other_address})
        locals_ = Counter(s.local_part for s in config.students)
        self.by_local = {s.local_part: s for s in config.students if locals_[s.local_part] == 1}
        self._uses_to = lesson is not None and uses_variable(lesson, "to")
        self._base: dict[str, str] | None = None  # the lesson's variables on the class profile
        self._variants: dict[str, list[dict[str, str]]] = {}
        self.mails_sent = 0
        self.error_counts: Counter[str] = Counter()
        self.students = {s.id: StudentState(s, self) for s in config.students}

    # --- students ----------------------------------------------------------------------------

    def new_progress(self, student: Student) -> LessonProgress | None:
        if self.lesson is None:
            return None
        variants = self._variants.get(student.id)
        if variants is None:
            if self._base is None:
                self._base = lesson_variables(self.lesson, self.profile)
            partner = self.config.partner(student)
            to, me = self.config.partner_address(student), student.other_address or student.address
            readings = [to] + ([me] if self._uses_to and partner is not student else [])
            world = world_variables(student.other_address) if self.config.is_world else None
            variants = self._variants[student.id] = [
                student_variables(
                    self.lesson, self.profile, student.address, student.secret, to=reading, partner=partner.address,
                    base=self._base, world=world,
                )
                for reading in readings
            ]
        return LessonProgress(self.lesson, variants, self.facts)

    def resolve(self, login: str) -> Student | None:
        """A student by address or (unambiguous) local part, as the server's login does."""
        name = login.strip().strip("<>").lower()
        return self.by_address.get(name) or (self.by_local.get(name) if "@" not in name else None)

    # --- reading -------------------------------------------------------------------------------

    def _files(self) -> Iterable[tuple[str, Path, int]]:
        days: list[str] = []
        for directory in self.transcripts_dirs:
            try:
                days += sorted(entry.path for entry in os.scandir(directory) if entry.is_dir())
            except FileNotFoundError:
                continue
        for day in days:
            try:
                entries = list(os.scandir(day))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.name.endswith(".jsonl"):
                    continue
                session_id = entry.name[: -len(".jsonl")]
                known = self.sessions.get(session_id)
                if known is not None and known.closed:
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue
                if known is not None and size <= known.offset:
                    continue
                yield session_id, Path(entry.path), size

    def poll(self) -> ClassSnapshot:
        """Read what the server appended since the last poll; returns the class as it is now."""
        with self.lock:
            if self.facts is not None:
                self.facts.invalidate()
            touched: dict[str, SessionLog] = {}
            for session_id, path, _ in self._files():
                session = self.sessions.get(session_id)
                if session is None:
                    session = self.sessions[session_id] = SessionLog(session_id, path)
                    if self.world is not None:
                        session.domain = path.parents[2].name
                    self.weak.add(session_id)
                records, session.offset = follow(path, session.offset)
                if not records:
                    continue
                before = session.student
                for record in records:
                    self._take(session, record)
                if session.relay:
                    self.weak.discard(session_id)
                    continue
                touched[session_id] = session
                if before is not None and session.student != before:
                    self.students[before].remove(session)
            if touched and self.weak:
                self._attribute_by_address(touched)
            for session in sorted(touched.values(), key=lambda s: (s.started, s.id)):
                if session.student is not None:
                    state = self.students[session.student]
                    state.add(session)
                    state.catch_up(session, self.live)
            for state in self.students.values():
                if state.dirty:
                    state.rebuild(self.live)
            return self.snapshot()

    def _attribute_by_address(self, touched: dict[str, SessionLog]) -> None:
        """Sessions without a login go to the one student who logged in from their client address.

        Only a login proves who a student is: an address typed in MAIL FROM or USER names anyone,
        so a classmate could have their errors charged to someone else's grade.
        """
        owners: dict[str, set[str]] = {}
        for session in self.sessions.values():
            if session.how == "auth" and session.student is not None:
                owners.setdefault(session.host, set()).add(session.student)
        for session_id in list(self.weak):
            session = self.sessions[session_id]
            if session.how == "auth":
                self.weak.discard(session_id)
                continue
            candidates = owners.get(session.host, set())
            owner = next(iter(candidates)) if len(candidates) == 1 else None
            if owner == session.student:
                continue
            if session.student is not None:
                self.students[session.student].remove(session)
            session.student, session.how = owner, ("ip" if owner else None)
            touched[session_id] = session

    def _take(self, session: SessionLog, record: dict) -> None:
        direction = record.get("dir")
        if session.relay:
            session.closed = session.closed or (direction == "e" and record.get("event") == "close")
            return
        session.records.append(record)
        if direction == "e":
            event = record.get("event")
            if event == "open":
                session.protocol = str(record.get("protocol", "smtp")).lower()
                session.peer = str(record.get("peer", ""))
                session.started = _time(record)
                if session.host in self.relay_hosts:
                    session.relay, session.records = True, []
            elif event == "close":
                session.closed = True
            elif event == "authenticated":
                student = self.resolve(str(record.get("user", "")))
                if student is not None and session.how != "auth":
                    session.student, session.how = student.id, "auth"
            elif event == "message accepted":
                self.mails_sent += 1
        elif direction == "s":
            line = str(record.get("line", ""))
            if _SMTP_ERROR.match(line) or line.startswith("-ERR"):
                self.error_counts[_ADDRESS_IN_REPLY.sub("<…>", line)[:60]] += 1

    def replay_all(self) -> None:
        """Grading: replay every student from scratch (exact time order, each session whole)."""
        with self.lock:
            for state in self.students.values():
                state.rebuild(live=True)

    # --- views ---------------------------------------------------------------------------------

    def snapshot(self) -> ClassSnapshot:
        with self.lock:
            rows = tuple(state.row() for state in self.students.values())
            unattributed = sum(1 for s in self.sessions.values() if s.student is None and not s.closed and not s.relay)
            return ClassSnapshot(
                time=time.time(),
                students=rows,
                connected=sum(1 for row in rows if row.connected),
                mails_sent=self.mails_sent,
                unattributed=unattributed,
                top_errors=tuple(self.error_counts.most_common(5)),
            )

    def lines(self, student_id: str, start: int = 0, generation: int | None = None) -> tuple[int, list[str]] | None:
        """The follow view's lines from `start` (all of them when the student was rebuilt).

        None while a poll is running: the UI thread never waits for the reader.
        """
        if not self.lock.acquire(blocking=False):
            return None
        try:
            state = self.students[student_id]
            if generation is not None and generation != state.generation:
                start = 0
            return state.generation, list(state.lines[start:])
        finally:
            self.lock.release()
