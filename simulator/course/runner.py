"""The lesson engine: feeds typed lines and server replies through the session model, decides
when a step is complete, escalates hints after failed attempts and records the attempt.

No UI and no network: the lesson screen (and its watch mode), `maillab lint`'s replay and the
classroom tracker all drive it the same way: `sent(line)` for every line the learner sends,
`received(lines)` for what the server sends, `reconnect`, `tls_started`, `closed` and
`server_changed` for what happens to the connection and the servers. What follows from them
(a step completed, a failure, a hint, the lesson finished) comes out as events to subscribers
(`subscribe`), so no driver has to poll the run or read its private state.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from mockservers.masking import MASK
from simulator.engine.message_view import bounced_recipients, envelope_sender, hop_count, parse_headers
from simulator.engine.replies import parse_pop3_reply, parse_smtp_reply
from simulator.engine.session import Exchange, LineKind, POP3Session, SMTPSession

from .model import CheckGroup, Expectation, Lesson, Step
from .patterns import LinePattern, compile_pattern

#: After this many failed attempts in a step, the next hint is shown without asking.
FAILURES_PER_HINT = 2


class ServerFacts(Protocol):
    """What `!` checks may ask about the server side (a local MailStore, or grading's view)."""

    def mailbox_messages(self, address: str) -> list[bytes]: ...

    def queue_count(self, domain: str) -> int: ...


class StoreFacts:
    """ServerFacts read straight from a maillab data directory (embedded or local servers)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def mailbox_messages(self, address: str) -> list[bytes]:
        try:
            return [self.store.read(address, m.uid) for m in self.store.messages(address)]
        except (KeyError, ValueError, OSError):
            return []

    def queue_count(self, domain: str) -> int:
        return self.store.queued_count(domain)


@dataclass
class Event:
    """One line sent (with the reply it got, once it arrives) or a reply nobody asked for."""

    sent: str | None
    kind: str
    reply: Any = None
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StepCompleted:
    """A step is done (`skipped`: the learner gave up on it with Ctrl+N)."""

    step: str
    skipped: bool = False


@dataclass(frozen=True)
class StepFailed:
    """A line with an error diagnostic, or a 4xx/5xx/-ERR reply, during `step`."""

    step: str
    failures: int


@dataclass(frozen=True)
class HintShown:
    """Hint `number` of `step` is visible now (`automatic`: earned by failures, not asked for)."""

    step: str
    number: int
    automatic: bool


@dataclass(frozen=True)
class ReplyReceived:
    """A complete reply; `step` is the step that was current when it arrived (its explanations)."""

    exchange: Exchange
    step: str | None


@dataclass(frozen=True)
class LessonFinished:
    """The last step is done: nothing is current any more."""


@dataclass(frozen=True)
class Reconnected:
    """The run follows another connection: a new one (a fresh session model), or, `resumed`,
    one it followed before and that is still open. The steps' progress is kept."""

    protocol: str
    resumed: bool = False


@dataclass(frozen=True)
class ConnectionClosed:
    """The connection ended (the server hung up, or the client went away)."""


RunEvent = StepCompleted | StepFailed | HintShown | ReplyReceived | LessonFinished | Reconnected | ConnectionClosed


@dataclass
class StepProgress:
    step: Step
    start: int  # index into events where this step began
    failures: int = 0
    hints_shown: int = 0
    completed: bool = False


class LessonRun:
    """One learner working through one lesson (one connection at a time)."""

    def __init__(
        self,
        lesson: Lesson,
        variables: dict[str, str],
        *,
        protocol: str | None = None,
        server_facts: ServerFacts | None = None,
        completed: set[str] | None = None,
        clock: Callable[[], float] = time.time,
        accept_redacted: bool = False,
    ) -> None:
        self.lesson = lesson
        # Grading from server transcripts, where AUTH/PASS/APOP secrets are "***" (see _line_matches).
        self.accept_redacted = accept_redacted
        self.server_user: str | None = None
        self.variables = variables
        self.protocol = protocol or ("pop3" if lesson.protocol == "pop3" else "smtp")
        self.server_facts = server_facts
        self.clock = clock
        self.session: SMTPSession | POP3Session = self.new_session()
        self.events: list[Event] = []
        self._subscribers: list[Callable[[RunEvent], None]] = []
        self._awaiting: list[Event] = []
        self.record: list[dict[str, Any]] = []
        self._patterns: dict[tuple[str, int], LinePattern] = {}
        self._resume: dict[tuple[str, int], tuple[int, int, int, int]] = {}
        self._sequences: dict[int, list[Expectation]] = {}
        self.replied_step: Step | None = None
        done = completed or set()
        self.progress = [StepProgress(step, 0, completed=step.id in done) for step in lesson.steps]
        self.log("start", lesson=lesson.id, steps_hash=lesson.steps_hash)

    # --- events out ---------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[RunEvent], None]) -> Callable[[], None]:
        """Call `callback` with every event from now on; returns the function that stops it.

        Events are delivered synchronously, inside the `sent`/`received`/... call that caused
        them, after the run's state is updated: a subscriber may read `current` or `session`.
        """
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def _emit(self, event: RunEvent) -> None:
        for callback in list(self._subscribers):
            callback(event)

    # --- the session -------------------------------------------------------------------------

    def new_session(self) -> SMTPSession | POP3Session:
        return POP3Session() if self.protocol == "pop3" else SMTPSession()

    def reconnect(self, protocol: str | None = None, *, implicit_tls: bool = False) -> None:
        """A new connection: a fresh session model, the step's progress is kept.

        `implicit_tls`: the connection is encrypted from its first byte (ports 465 and 995).
        """
        if protocol:
            self.protocol = protocol
        self.session = self.new_session()
        self.session.tls_active = implicit_tls
        self._awaiting.clear()
        self.server_user = None
        self.log("connect", protocol=self.protocol)
        self._emit(Reconnected(self.protocol))

    def resume(self, session: SMTPSession | POP3Session) -> None:
        """Follow again a connection that is still open, whose session model the driver kept.

        Watch mode: the learner's own console and a telnet session in another terminal take
        turns; each keeps its model, and the run checks whichever speaks. Lines of the connection
        left that still wait for a reply are given up (their replies arrive as unasked ones).
        """
        if session is self.session:
            return
        self.session = session
        self.protocol = "pop3" if isinstance(session, POP3Session) else "smtp"
        self._awaiting.clear()
        self.server_user = None
        self.log("resume", protocol=self.protocol)
        self._emit(Reconnected(self.protocol, resumed=True))

    def switch_language(self, lesson: Lesson) -> None:
        """The same lesson in another language (lint guarantees the same ids and steps)."""
        self.lesson = lesson
        for progress, step in zip(self.progress, lesson.steps):
            progress.step = step
        self._patterns.clear()  # caches keyed by the old steps' objects
        self._resume.clear()
        self._sequences.clear()

    @property
    def current(self) -> StepProgress | None:
        for progress in self.progress:
            if not progress.completed:
                return progress
        return None

    @property
    def finished(self) -> bool:
        return self.current is None

    def completed_steps(self) -> list[str]:
        return [p.step.id for p in self.progress if p.completed]

    def step_events(self) -> list[Event]:
        """The lines and replies since the current step began (what its checks look at)."""
        progress = self.current
        return self.events[progress.start :] if progress is not None else []

    # --- feeding -----------------------------------------------------------------------------

    def sent(self, line: str, diagnostics: list[Any] | None = None) -> LineKind:
        """The learner sent `line` (a command, an AUTH answer, a message line)."""
        kind = self.session.sent(line)
        event = Event(line, str(kind), time=self.clock())
        self.events.append(event)
        if kind in (LineKind.COMMAND, LineKind.AUTH_RESPONSE, LineKind.END_OF_DATA):
            self._awaiting.append(event)
        shown = line if kind != LineKind.AUTH_RESPONSE else "***"
        errors = [d for d in diagnostics or [] if getattr(d, "severity", "") == "error"]
        self.log("sent", line=shown, kind=str(kind), diagnostics=[getattr(d, "id", str(d)) for d in diagnostics or []])
        if errors and self.current is not None:
            self._failed(self.current)
        self._evaluate()
        return kind

    def received(self, lines: list[str]) -> list[Exchange]:
        """Lines from the server (complete replies are matched to the lines that asked)."""
        replied = self.current.step if self.current is not None else None
        if replied is not None:
            self.replied_step = replied  # explain this reply with the step it answered
        exchanges = self.session.received(list(lines))
        if self.server_user is not None and getattr(self.session, "authenticated_user", None) != self.server_user:
            # The server knows best who logged in (`USER s01` is s01@class.test; AUTH hid the name).
            if getattr(self.session, "authenticated", False) or getattr(self.session, "logged_in", False):
                self.session.authenticated_user = self.server_user
        for exchange in exchanges:
            event = self._awaiting.pop(0) if (exchange.sent is not None and self._awaiting) else None
            if event is None:
                event = Event(None, "reply", time=self.clock())
                self.events.append(event)
            event.reply = exchange.reply
            self.log("reply", lines=list(exchange.reply.raw))
            self._emit(ReplyReceived(exchange, replied.id if replied is not None else None))
            if self.current is not None and _is_failure(exchange.reply):
                self._failed(self.current)
        if exchanges:
            self._evaluate()
        return exchanges

    def server_authenticated(self, user: str) -> None:
        """Grading: the server's transcript says this connection is logging in as `user`.

        A redacted AUTH exchange hides the user name from the session model (and `USER s01`
        names s01@class.test only for the server); the server's "authenticated" event, written
        just before the success reply, supplies it, so `? authenticated as $user` works on
        transcripts too.
        """
        self.server_user = user.strip().lower()

    def tls_started(self) -> None:
        self.session.tls_started()
        self.log("tls")
        self._evaluate()

    def server_changed(self) -> None:
        """Something only the server side shows has happened (a DNS question arrived, mail was
        relayed): check the current step's `! server` facts again, with no line sent."""
        self._evaluate()

    def closed(self) -> None:
        self.session.closed = True
        self.events.append(Event(None, "closed", reply="closed", time=self.clock()))
        self.log("closed")
        self._emit(ConnectionClosed())
        self._evaluate()

    # --- hints and explanations --------------------------------------------------------------

    def _failed(self, progress: StepProgress) -> None:
        progress.failures += 1
        self._emit(StepFailed(progress.step.id, progress.failures))
        if progress.failures % FAILURES_PER_HINT == 0 and progress.hints_shown < len(progress.step.hints):
            progress.hints_shown += 1
            self.log("hint", step=progress.step.id, number=progress.hints_shown, automatic=True)
            self._emit(HintShown(progress.step.id, progress.hints_shown, automatic=True))

    def next_hint(self) -> str | None:
        """The learner asked for a hint: reveal the next one (or repeat the last)."""
        progress = self.current
        if progress is None or not progress.step.hints:
            return None
        if progress.hints_shown < len(progress.step.hints):
            progress.hints_shown += 1
        self.log("hint", step=progress.step.id, number=progress.hints_shown, automatic=False)
        self._emit(HintShown(progress.step.id, progress.hints_shown, automatic=False))
        return progress.step.hints[progress.hints_shown - 1]

    def visible_hints(self) -> list[str]:
        progress = self.current
        return list(progress.step.hints[: progress.hints_shown]) if progress else []

    def explanation(self, code: str | None, diagnostic: str | None = None) -> str | None:
        """The instructor's note for a reply: from the step that was current when it arrived."""
        step = self.replied_step or (self.current.step if self.current else None)
        return step.explanation_for(code, diagnostic) if step else None

    # --- completion --------------------------------------------------------------------------

    def wants(self, line: str, reply: list[str] | tuple[str, ...]) -> bool:
        """Does the current step ask for `line` to get `reply`, the refusal the checker predicts?

        A step that teaches a refusal (`> RCPT TO:<nobody@...>` then `< 550`) wants the learner to
        send the line; the console then shows the prediction as the step's goal, not as a warning.
        """
        progress = self.current
        if progress is None or not reply:
            return False
        parsed = parse_pop3_reply(list(reply)) if isinstance(self.session, POP3Session) else parse_smtp_reply(list(reply))
        for group in progress.step.checks:
            sequence = [e for e in group.expectations if e.kind in ("send", "reply")]
            for index, expectation in enumerate(sequence):
                if expectation.kind != "send" or not self._line_matches(expectation, line):
                    continue
                replies = []
                for following in sequence[index + 1:]:
                    if following.kind != "reply":
                        break
                    replies.append(following)
                if replies and all(reply_matches(r.text, parsed) for r in replies):
                    return True
        return False

    def _evaluate(self) -> None:
        while True:
            progress = self.current
            if progress is None:
                return
            events = self.events[progress.start :]
            for group in progress.step.checks:
                end = self.group_done(progress.step, group, events)
                if end is not None:
                    progress.completed = True
                    following = self.current
                    if following is not None:
                        following.start = progress.start + end
                    self.log("step complete", step=progress.step.id)
                    self._completed(progress.step.id)
                    break
            else:
                return

    def _completed(self, step: str, skipped: bool = False) -> None:
        self._emit(StepCompleted(step, skipped))
        if self.finished:
            self._emit(LessonFinished())

    def _pattern(self, expectation: Expectation) -> LinePattern:
        key = (expectation.text, expectation.line)
        if key not in self._patterns:
            self._patterns[key] = compile_pattern(expectation.text, self.variables)
        return self._patterns[key]

    def group_done(self, step: Step, group: CheckGroup, events: list[Event]) -> int | None:
        """Index just past the event that completes the group, or None.

        The scan resumes where it stopped: events before the first one still waiting for its
        reply never change, so the scan's state after them (next event, position in the
        expectations, end) is kept and the next call goes on from there. The answer is the one a
        rescan from the step's start gives, in linear time over a long session (a student stuck on
        one step for a thousand lines). Facts are checked on every call.
        """
        start = len(self.events) - len(events)
        key = (step.id, id(group))
        sequence = self._sequences.get(id(group))
        if sequence is None:
            sequence = self._sequences[id(group)] = [e for e in group.expectations if e.kind in ("send", "reply")]
        cached = self._resume.get(key)
        index, position, end = cached[1:] if cached is not None and cached[0] == start else (0, 0, 0)
        saving = True
        while index < len(events) and position < len(sequence):
            event = events[index]
            if saving and event.reply is None and any(event is waiting for waiting in self._awaiting):
                saving = False  # its reply may still come and change the answer: keep the state before it
                self._resume[key] = (start, index, position, end)
            expectation = sequence[position]
            if expectation.kind == "send":
                if event.sent is not None and self._line_matches(expectation, event.sent):
                    replies = []
                    following = position + 1
                    while following < len(sequence) and sequence[following].kind == "reply":
                        replies.append(sequence[following])
                        following += 1
                    if replies and event.reply is None:
                        return None  # the reply has not arrived yet
                    if not replies or all(reply_matches(r.text, event.reply) for r in replies):
                        position, end = following, index + 1
            elif event.reply is not None and reply_matches(expectation.text, event.reply):
                position, end = position + 1, index + 1
            index += 1
        if saving:
            self._resume[key] = (start, index, position, end)
        if position < len(sequence) or not self.facts_hold(group):
            return None
        return end

    def facts_hold(self, group: CheckGroup) -> bool:
        """The group's `? fact` and `? server ...` expectations hold now."""
        for expectation in group.expectations:
            if expectation.kind == "fact" and not self.fact(expectation.text):
                return False
            if expectation.kind == "server" and not self.server_fact(expectation.text):
                return False
        return True

    def skip_step(self) -> None:
        """The learner gave up on the current step: it counts as done, and the record says skipped."""
        progress = self.current
        if progress is None:
            return
        progress.completed = True
        self.log("skipped", step=progress.step.id)
        self._completed(progress.step.id, skipped=True)

    @property
    def waiting_for_reply(self) -> bool:
        """Lines were sent whose replies have not all arrived (a driver reads until they have)."""
        return bool(self._awaiting)

    def matches_line(self, expectation: Expectation, line: str) -> bool:
        """Whether a line the learner sent meets a `> ...` expectation of this lesson."""
        return self._line_matches(expectation, line)

    def _line_matches(self, expectation: Expectation, line: str) -> bool:
        if self._pattern(expectation).matches(line):
            return True
        return self.accept_redacted and MASK in line and redacted_matches(expectation.text, line, self.variables)

    def fact(self, text: str) -> bool:
        """Session facts (`? tls`, `? authenticated as $user`, `? recipients 2` ...)."""
        s = self.session
        words = text.split(None, 1)
        name, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
        if name == "tls":
            return s.tls_active
        if name == "greeted":
            return bool(getattr(s, "helo_domain", None)) if isinstance(s, SMTPSession) else s.greeting is not None
        if name == "authenticated":
            user = s.authenticated_user
            if not rest:
                return user is not None
            pattern = rest[3:].strip() if rest.lower().startswith("as ") else rest
            return user is not None and compile_pattern(pattern, self.variables).matches(user)
        if name == "recipients":
            return isinstance(s, SMTPSession) and len(s.recipients) == int(rest)
        if name == "sender":
            return isinstance(s, SMTPSession) and s.mail_from is not None and compile_pattern(rest, self.variables).matches(s.mail_from or "<>")
        if name == "state":
            return str(s.state).lower() == rest.lower() or getattr(s.state, "name", "").lower() == rest.lower()
        if name == "deleted":
            return isinstance(s, POP3Session) and int(rest) in s.deleted
        if name == "retrieved":
            return isinstance(s, POP3Session) and int(rest) in s.retrieved
        if name == "accepted":
            return isinstance(s, SMTPSession) and s.messages_accepted >= int(rest)
        if name == "data":
            return isinstance(s, SMTPSession) and s.data_mode
        if name == "closed":
            return s.closed
        return False

    def server_fact(self, text: str) -> bool:
        """Server-side facts (`! mailbox $to has subject "Hello"`); false when unknown."""
        if self.server_facts is None:
            return False
        if getattr(self.server_facts, "trusting", False):
            return True  # a remote server's mailboxes cannot be seen from here
        from .patterns import substitute_variables

        text = substitute_variables(text, self.variables)
        match = re.match(r'(?i)^mailbox (\S+) has (subject|body|header) "(.*)"$', text)
        if match:
            address, part, wanted = match.group(1), match.group(2).lower(), match.group(3)
            return any(_message_has(raw, part, wanted) for raw in self.server_facts.mailbox_messages(address))
        match = re.match(r"(?i)^mailbox (\S+) count (\d+)$", text)
        if match:
            return len(self.server_facts.mailbox_messages(match.group(1))) == int(match.group(2))
        match = re.match(r"(?i)^dns asked (\S+) (\S+)$", text)
        if match:
            asked = getattr(self.server_facts, "dns_asked", None)
            return asked is not None and asked(match.group(1).upper(), match.group(2))
        match = re.match(r"(?i)^queue (\S+) count (\d+)$", text)
        if match:
            return self.server_facts.queue_count(match.group(1)) == int(match.group(2))
        match = re.match(r"(?i)^mailbox (\S+) has mail from (\S+) over (\d+) hops?$", text)
        if match:
            sender, hops = match.group(2).strip("<>").lower(), int(match.group(3))
            return any(
                envelope_sender(raw) == sender and hop_count(raw) >= hops
                for raw in self.server_facts.mailbox_messages(match.group(1))
            )
        match = re.match(r"(?i)^mailbox (\S+) has bounce(?: for (\S+))?$", text)
        if match:
            wanted = (match.group(2) or "").strip("<>").lower()
            for raw in self.server_facts.mailbox_messages(match.group(1)):
                failed = bounced_recipients(raw)
                if failed is not None and (not wanted or wanted in failed):
                    return True
            return False
        return False

    # --- the record --------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> None:
        self.record.append({"t": round(self.clock(), 3), "event": event, **fields})

    def attempt(self) -> dict[str, Any]:
        """What a teacher reviews: every line, reply, diagnostic, hint and completion, timed."""
        return {
            "lesson": self.lesson.id,
            "language": self.lesson.language,
            "steps_hash": self.lesson.steps_hash,
            "completed": self.completed_steps(),
            "failures": {p.step.id: p.failures for p in self.progress},
            "events": self.record,
        }



_HIDDEN_TOKEN = re.compile(r"^(?:\{[^{}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)+$")


def redacted_matches(pattern: str, line: str, variables: dict[str, str]) -> bool:
    """Whether a transcript line with its secret redacted (`AUTH PLAIN ***`, `PASS ***`,
    `APOP s01@class.test ***`, or `***` for a SASL answer) can be a line matching `pattern`.

    The words before `***` must match the pattern's first words as usual; the pattern's remaining
    words, which `***` hides, must be placeholders (`{base64:$user}`, `{plain:...}`, `{any}` ...)
    or variables (`$secret`): they are taken as wildcards. Literal text is never hidden, so
    `***` cannot pass for `MAIL FROM:<$user>`. The reply still has to match, so a failed login
    stays failed.
    """
    body = line.strip()
    if not body.endswith(MASK) or body.count(MASK) != 1:
        return False
    shown = body[: -len(MASK)].split()
    words = pattern.strip().split()
    hidden = words[len(shown) :]
    if not hidden or not all(_HIDDEN_TOKEN.match(word) for word in hidden):
        return False
    if not shown:
        return True
    try:
        return compile_pattern(" ".join(words[: len(shown)]), variables).matches(" ".join(shown))
    except ValueError:
        return False


def reply_matches(expected: str, reply: Any) -> bool:
    """`250`, `2xx`, `25x`, `250 text`, `+OK`, `-ERR [IN-USE]`, `closed` against a parsed reply."""
    if reply == "closed":
        return expected.strip().lower() == "closed"
    expected = expected.strip()
    if expected.lower() == "closed":
        return False
    raw = list(getattr(reply, "raw", ()))
    if expected.startswith(("+OK", "-ERR", "+ ")) or expected == "+":
        status = raw[0] if raw else ""
        indicator, _, text = expected.partition(" ")
        if indicator == "+":  # a SASL continuation, never +OK
            return (status == "+" or status.startswith("+ ")) and (not text or text.lower() in status.lower())
        if not status.startswith(indicator):
            return False
        return not text or text.lower() in status.lower()
    code = getattr(reply, "code", None) or ""
    pattern, _, text = expected.partition(" ")
    if len(code) != 3 or len(pattern) != 3:
        return False
    if not all(p in ("x", "X") or p == c for p, c in zip(pattern, code)):
        return False
    return not text or any(text.lower() in line.lower() for line in raw)


def _is_failure(reply: Any) -> bool:
    code = getattr(reply, "code", None)
    if code:
        return code[0] in "45"
    return getattr(reply, "kind", "") == "err"


def _message_has(raw: bytes, part: str, wanted: str) -> bool:
    """Whether one stored message has `wanted` in its Subject, a header or its body.

    Only the header section is parsed (never the MIME tree: a message nested a thousand levels
    deep is just text here), and a header that cannot be decoded does not match: a hostile
    message fails this check alone, never the whole grading.
    """
    wanted_lower = wanted.lower()
    if part in ("subject", "header"):
        message = parse_headers(raw)  # the default policy decodes RFC 2047 and UTF-8 headers (你好, SMTPUTF8)
        name, _, value = ("Subject", "", wanted) if part == "subject" else wanted.partition(":")
        try:
            values = [str(v) for v in message.get_all(name.strip(), [])]
        except (ValueError, TypeError, IndexError, LookupError):
            values = [str(v) for key, v in message.raw_items() if key.lower() == name.strip().lower()]
        return any(value.strip().lower() in v.lower() for v in values) if part == "header" else any(
            wanted_lower in v.lower() for v in values
        )
    body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    return wanted_lower in body.decode("utf-8", "replace").lower()
