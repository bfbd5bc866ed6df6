"""The lesson screen: the step's prose, the console, and the explanation of every reply.

Also follows sessions the learner opens in a real terminal (telnet, nc, openssl): their lines
come from the embedded server, and the lesson's checks apply to them too.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Header, Markdown, Static

from mailprotocol import pop3 as core_pop3
from mailprotocol import smtp as core_smtp
from simulator.course.model import Lesson
from simulator.course.runner import HintShown, LessonFinished, LessonRun, ReplyReceived, RunEvent, StepCompleted, StoreFacts
from simulator.course.setup import lesson_mail, lesson_profile, lesson_variables
from simulator.engine.session import Expect, POP3Session, SMTPSession
from simulator.engine.validate import fresh_session  # noqa: F401  (keeps the validator warm on import)

from .console import Console
from .console_screen import CONSOLE_KEYS, ConsoleScreen
from .dialogs import HelpScreen, WatchScreen, watch_commands
from .lab import Endpoints
from .strings import t
from .keys import Key, bindings
from .widgets import AppFooter, ExplanationPane, ProsePane

#: Verbs that belong to one protocol only: typing one switches the console to that protocol.
POP3_VERBS = core_pop3.VERB_NAMES - core_smtp.VERB_NAMES
SMTP_VERBS = core_smtp.VERB_NAMES - core_pop3.VERB_NAMES

LESSON_KEYS = [
    Key("f1", "help", "key_help"),
    Key("f2", "hint", "key_hint"),
    Key("f6", "watch", "key_watch"),
    Key("ctrl+r", "reconnect", "key_reconnect", priority=True),
    Key("ctrl+o", "switch_protocol", "key_switch_protocol", priority=True),
    Key("ctrl+n", "skip_step", "key_next_step", show=False, priority=True),
    Key("escape", "back", "key_back"),
]


class TrustingFacts:
    """A remote classroom server's mailboxes cannot be read from here: `!` facts are assumed."""

    trusting = True

    def mailbox_messages(self, address: str) -> list[bytes]:
        return []

    def queue_count(self, domain: str) -> int:
        return 0


#: Server events after which a mailbox or a queue may hold something new (a `! mailbox` fact).
MAIL_MOVED = frozenset({"message accepted", "relayed", "bounced", "bounce sent", "deferred"})


class LessonScreen(ConsoleScreen):
    BINDINGS = bindings([*LESSON_KEYS, *CONSOLE_KEYS])

    def __init__(self, lesson: Lesson, extra_dirs: list[Path] | None = None) -> None:
        super().__init__()
        self.lesson = lesson
        self.title = lesson.title
        self.extra_dirs = extra_dirs or []
        self.run: LessonRun | None = None
        self.endpoints: Endpoints | None = None
        self.profile: Any = None
        self.protocol = "pop3" if lesson.protocol == "pop3" else "smtp"
        self.shown_step: str | None = None
        #: Each external session's model, kept while it is open: the run checks whichever speaks.
        self.external: dict[str, SMTPSession | POP3Session] = {}
        self._implicit_tls: set[str] = set()  # external sessions on an implicit-TLS port
        self._steps_done: list[StepCompleted] = []  # heard from the run, not shown yet
        self._lesson_finished = False
        self.last_exchange: Any = None
        self._held_lines: list[Any] = []
        self._own_ports: set[int] = set()  # every connection the console made: never "external"

    @property
    def lang(self) -> str:
        return self.app.lang  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="lesson-body"):
            with ProsePane(id="prose-pane"):
                yield Static("", id="step-title")
                yield Markdown("", id="prose")
                yield Markdown("", id="hints")  # hints quote commands as `code`: rendered, not raw backticks
            with Vertical(id="work-pane"):
                yield Console(self.protocol, self.lang, strict=False, id="console")
                with VerticalScroll(id="explain-pane"):
                    yield ExplanationPane(t("explain_waiting", self.lang), id="explain")
        yield Static("", id="status")
        yield AppFooter()

    def has_console(self) -> bool:
        """Whether this screen is mounted with its console: server callbacks may outlive it."""
        return self.is_mounted and bool(self.query(Console))

    @property
    def console(self) -> Console:
        return self.query_one(Console)

    async def on_mount(self) -> None:
        self.remember_consoles()
        self.console.command.focus()  # entering a lesson puts the cursor in its command line
        await self.start()

    async def start(self) -> None:
        """Fresh servers with the lesson's profile, accounts and mail; then connect."""
        app: Any = self.app
        try:
            self.profile = lesson_profile(self.lesson, self.extra_dirs)
        except Exception as error:  # a broken lesson is explained, not a crash
            self.console.transcript.event(str(error))
            return
        if self.lesson.world:
            self.endpoints = await asyncio.to_thread(
                app.lab.start_world, self.lesson, f"lesson-{self.lesson.id}", on_line=self.external_line,
                on_event=self.server_event, on_dns=self.dns_question,
            )
        else:
            self.endpoints = await asyncio.to_thread(
                app.lab.start, self.profile, f"lesson-{self.lesson.id}", on_line=self.external_line, on_event=self.server_event
            )
        variables = lesson_variables(self.lesson, self.profile)
        if app.lab.remote and getattr(app, "login", None):
            from simulator.classroom.variables import student_variables, world_variables

            # A classroom server: the learner is the --login address, whatever the lesson's persona says.
            secret = getattr(app, "login_secret", None) or variables.get("secret", "")
            other = getattr(app, "other_login", None)
            world = world_variables(other) if other else None
            variables = student_variables(self.lesson, self.profile, app.login, secret, world=world)
        store = app.lab.store
        if store is not None:
            for address, content in lesson_mail(self.lesson, variables):
                await asyncio.to_thread(store.deliver, [address], content)
        facts = StoreFacts(store) if store is not None else TrustingFacts()
        if app.lab.world is not None:
            from simulator.course.world_lab import WorldFacts

            facts = WorldFacts(app.lab.world)
        completed = app.progress.completed(self.lesson)
        self.run = LessonRun(self.lesson, variables, protocol=self.protocol, server_facts=facts, completed=completed)
        self.run.subscribe(self.run_event)
        self.console.strict = "strict" in (self.run.current.step.options if self.run.current else ())
        self.show_step()
        self.update_status()
        await self.console.connect(self.endpoints, self.profile, self.run, self.protocol)

    # --- showing the lesson --------------------------------------------------------------------

    def show_step(self) -> None:
        run = self.run
        if run is None:
            return
        progress = run.current
        title = self.query_one("#step-title", Static)
        if progress is None:
            title.update(t("lesson_complete", self.lang))
            self.query_one("#prose", Markdown).update(self.lesson.intro)
            self.query_one("#hints", Markdown).update("")
            self.shown_step = None
            return
        step = progress.step
        if self.shown_step != step.id:
            number = self.lesson.steps.index(step) + 1
            title.update(t("lesson_step", self.lang, number=number, total=len(self.lesson.steps), title=step.title))
            # A step the learner sends nothing in (waiting for the greeting) finishes as soon as the
            # server speaks, before it could be read: its text stays above the step that follows.
            waited: list[Any] = []
            for earlier in reversed(self.lesson.steps[: number - 1]):
                if any(group.sends for group in earlier.checks):
                    break
                waited.insert(0, earlier)
            parts = [self.lesson.intro] if self.lesson.intro and number - len(waited) == 1 else []
            parts += [f"### ✔ {earlier.title}\n\n{earlier.prose}" for earlier in waited]
            parts.append(step.prose)
            self.query_one("#prose", Markdown).update("\n\n".join(part for part in parts if part))
            self.shown_step = step.id
            self.console.strict = "strict" in step.options
        hints = run.visible_hints()
        self.query_one("#hints", Markdown).update(
            "\n\n".join(t("lesson_hint", self.lang, number=i, text=h) for i, h in enumerate(hints, start=1))
        )

    def update_status(self) -> None:
        if self.endpoints is None:
            return
        app: Any = self.app
        if app.lab.remote:
            text = t("status_remote", self.lang, host=self.endpoints.host, smtp=self.endpoints.smtp, pop3=self.endpoints.pop3)
        else:
            text = t(
                "status_ports", self.lang,
                smtp=f"{self.endpoints.host}:{self.endpoints.smtp}", pop3=f"{self.endpoints.host}:{self.endpoints.pop3}",
            )
        self.query_one("#status", Static).update(text)

    def explain(self, exchange: Any) -> None:
        session = self.run.session if self.run else self.console.session
        if session is None:
            return
        note = None
        if exchange is not None and self.run is not None:
            code = getattr(exchange.reply, "code", None) or (list(exchange.reply.raw)[0].split()[0] if exchange.reply.raw else None)
            note = self.run.explanation(code)
        persona = self.profile.name if self.profile is not None else None
        self.query_one(ExplanationPane).show(self.lang, session, exchange, persona, note)

    def on_console_reply(self, message: Console.Reply) -> None:
        """The connection changed (TLS, closed): show the session as it is now. Replies are
        explained when the run reports them (`run_event`), whichever session they came from."""
        if message.exchange is None:
            self.last_exchange = None
            self.explain(None)

    def run_event(self, event: RunEvent) -> None:
        """What the lesson run reports: replies are explained at once; completed steps are shown
        after the line that completed them is in the transcript (the run reports from inside it)."""
        if isinstance(event, ReplyReceived):
            self.last_exchange = event.exchange
            self.explain(event.exchange)
        elif isinstance(event, HintShown):
            self.show_step()
        elif isinstance(event, StepCompleted | LessonFinished):
            if isinstance(event, StepCompleted):
                self._steps_done.append(event)
            else:
                self._lesson_finished = True
            if len(self._steps_done) + self._lesson_finished == 1:
                self.call_later(self.steps_advanced)

    async def steps_advanced(self) -> None:
        """Say which steps are done, show the next one, save progress, switch protocol if needed."""
        app: Any = self.app
        run = self.run
        done, self._steps_done = self._steps_done, []
        finished, self._lesson_finished = self._lesson_finished, False
        if run is None or not (done or finished):
            return
        self.show_step()
        for event in done:
            title = self.lesson.step(event.step).title
            self.console.transcript.event(t("lesson_step_done", self.lang, title=title))
        if done:
            self.notify(t("lesson_step_done", self.lang, title=self.lesson.step(done[-1].step).title), timeout=3)
        app.progress.mark(self.lesson, run.completed_steps())
        await asyncio.to_thread(app.progress.save)
        if finished:
            self.console.transcript.event(t("lesson_complete", self.lang))
        else:
            await self.maybe_switch_protocol()

    async def maybe_switch_protocol(self) -> None:
        """A `both` lesson moves from SMTP to POP3 when the next step starts with a POP3 verb."""
        if self.lesson.protocol != "both" or self.run is None or self.run.current is None or self.endpoints is None:
            return
        first = next((e.text.split()[0].upper() for g in self.run.current.step.checks for e in g.sends if e.text.split()), "")
        wanted = "pop3" if first in POP3_VERBS else "smtp" if first in SMTP_VERBS else self.protocol
        if wanted != self.protocol:
            self.protocol = wanted
            await self.console.connect(self.endpoints, self.profile, self.run, wanted)

    # --- external sessions (watch mode) ------------------------------------------------------

    def external_line(self, line: Any) -> None:
        """A line of any session on our servers; sessions not ours are followed and checked.

        The server may report our own connection before our side knows its port: such lines
        wait until it does (or are dropped as ours).
        """
        if not self.has_console():
            return  # the screen is gone (or not built yet): nothing to show it on
        conversation = self.console.conversation
        if conversation is not None:
            self._own_ports |= conversation.ports_used
        if conversation is None or conversation.connecting:
            self._held_lines.append(line)  # our connection is being set up: its port is not known yet
            return
        if self._held_lines:
            held, self._held_lines = self._held_lines, []
            for earlier in held:
                self._follow(earlier)
        self._follow(line)

    def server_event(self, event: Any) -> None:
        """What the server noticed that no line shows: a terminal's bare LF keeps DATA open; a
        message stored, relayed or bounced may make a step's `! mailbox` fact true."""
        if not self.has_console():
            return  # the screen is gone (or not built yet): nothing to show it on
        if event.kind == "waiting for CRLF.CRLF":
            self.console.transcript.event(t("watch_bare_lf", self.lang, peer=event.peer))
        elif event.kind in MAIL_MOVED and self.run is not None:
            self.run.server_changed()
        elif event.kind == "tls" and event.fields.get("implicit"):
            self._implicit_tls.add(event.session)  # before its greeting: the model starts in TLS
        elif event.kind == "disconnected":
            self._implicit_tls.discard(event.session)
            model = self.external.pop(event.session, None)
            if model is not None:
                self.console.transcript.event(t("transcript_external_closed", self.lang, peer=event.peer))
                if self.run is not None and self.run.session is model:
                    self.run.closed()
                else:
                    model.closed = True

    def dns_question(self, question: Any) -> None:
        """The world's DNS was asked a question (the learner's `dig`, a relay's MX look-up):
        shown in the transcript, and a step waiting for `! dns asked` may be done now."""
        if not self.has_console():
            return  # the screen is gone (or not built yet): nothing to show it on
        self.console.transcript.event(t("transcript_dns", self.lang, qtype=question.qtype, name=question.name))
        if self.run is not None:
            self.run.server_changed()

    def _follow(self, line: Any) -> None:
        if line.peer.rpartition(":")[2].isdigit() and int(line.peer.rpartition(":")[2]) in self._own_ports:
            return
        run = self.run
        if run is None:
            return
        protocol = line.protocol.lower()
        model = self.external.get(line.session)
        switched = model is None or run.session is not model
        if model is None:  # a new session: the learner connected (again) from another terminal
            run.reconnect(protocol, implicit_tls=line.session in self._implicit_tls)
            self.external[line.session] = run.session
        elif switched:  # a session followed before speaks again (after the console's, or another's)
            run.resume(model)
        if switched:
            self.protocol = protocol
            self.console.transcript.event(t("transcript_external", self.lang, peer=line.peer))
        source = line.peer
        if line.direction == "c":
            run.sent(line.raw)
            self.console.transcript.client(line.text, source=source, clear=line.raw)
        else:
            run.received([line.text])
            self.console.transcript.server([line.text], source=source)
            if run.session.expecting == Expect.TLS:
                run.tls_started()

    # --- actions -------------------------------------------------------------------------------

    def key_enabled(self, action: str) -> bool | None:
        """SMTP⇄POP3 only in lessons that use both protocols; the editor only after 354."""
        if action == "switch_protocol":
            return self.lesson.protocol == "both"
        return super().key_enabled(action)

    def action_hint(self) -> None:
        if self.run is None:
            return
        hint = self.run.next_hint()
        if hint is None:
            self.notify(t("lesson_no_hints", self.lang))
        self.show_step()
        self.query_one("#hints", Markdown).scroll_visible()  # below a long step the hint would be out of sight

    def action_watch(self) -> None:
        if self.endpoints is None:
            return
        ca = str(self.endpoints.ca_cert) if self.endpoints.ca_cert else None
        self.app.push_screen(WatchScreen(self.lang, watch_commands(self.endpoints, ca)))

    async def action_reconnect(self) -> None:
        if self.endpoints is not None and self.profile is not None:
            await self.console.connect(self.endpoints, self.profile, self.run, self.protocol)

    async def action_switch_protocol(self) -> None:
        if self.lesson.protocol == "both" and self.endpoints is not None:
            self.protocol = "pop3" if self.protocol == "smtp" else "smtp"
            await self.console.connect(self.endpoints, self.profile, self.run, self.protocol)

    async def action_skip_step(self) -> None:
        if self.run is not None:
            self.run.skip_step()  # the run reports the step done (`run_event`)

    def action_help(self) -> None:
        """F1 in a lesson: the general help, the lesson's way of working, and this step's hints so far."""
        context = [t("help_lesson", self.lang)]
        if self.run is not None and self.run.current is not None:
            step = self.run.current.step
            context.append(t("lesson_step", self.lang, number=self.lesson.steps.index(step) + 1,
                             total=len(self.lesson.steps), title=step.title))
            context += [t("lesson_hint", self.lang, number=i, text=h) for i, h in enumerate(self.run.visible_hints(), start=1)]
        self.app.push_screen(HelpScreen(self.lang, "\n".join(context)))

    async def after_leave(self) -> None:
        """Keep the attempt for the teacher to review."""
        app: Any = self.app
        if self.run is not None and self.run.record:
            folder = app.data_dir / "attempts"
            path = folder / f"{self.lesson.id}-{time.strftime('%Y%m%d-%H%M%S')}.json"

            def save() -> None:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(self.run.attempt(), ensure_ascii=False, indent=1), encoding="utf-8")

            await asyncio.to_thread(save)

    def set_language(self, lang: str) -> None:
        self.refresh_bindings()
        self.console.set_language(lang)
        self.shown_step = None
        self.show_step()
        self.update_status()
        self.explain(self.last_exchange)
