"""A console: the transcript of one connection, the live diagnostics and the command line.

Used once by the lesson screen and twice (SMTP and POP3) by the sandbox. It owns a
`Conversation`; the screen around it hears about replies through Textual messages.
"""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Static

from mockservers.masking import KnownSecrets
from mockservers.profile import Profile
from simulator.course.runner import LessonRun
from simulator.engine.session import Exchange, Expect, LineKind

from .conversation import Closed, Connected, Conversation, Replied, Sent, TLSStarted
from .lab import Endpoints
from .strings import t
from .widgets import Transcript


class Console(Vertical):
    """Transcript + diagnostics + input for one protocol."""

    class Reply(Message):
        """A complete reply arrived (or the connection changed state)."""

        def __init__(self, console: "Console", exchange: Exchange | None) -> None:
            super().__init__()
            self.console = console
            self.exchange = exchange

    def __init__(self, protocol: str, lang: str, *, strict: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocol = protocol
        self.lang = lang
        self.strict = strict
        self.profile: Profile | None = None
        #: The persona's account secrets, hidden in the panes wherever the learner types them
        #: (a password as the POP3 user name, in MAIL FROM), as the server's transcripts hide them.
        self.known_secrets = KnownSecrets(())
        self.conversation: Conversation | None = None
        self.last_diagnostics: list[Any] = []
        self.submitted_at = 0.0  # when Enter was handled (for the latency benchmark)
        self.implicit_tls = False  # connect to the implicit-TLS port (465/995 style) instead of the plain one

    def compose(self) -> ComposeResult:
        yield Transcript(classes="transcript")
        yield Static("", classes="diagnostics")
        yield Input(placeholder=t("lesson_input_placeholder", self.lang), classes="command")

    @property
    def transcript(self) -> Transcript:
        return self.query_one(Transcript)

    @property
    def command(self) -> Input:
        return self.query_one(Input)

    @property
    def session(self) -> Any:
        return self.conversation.session if self.conversation else None

    # --- connection ----------------------------------------------------------------------------

    async def connect(self, endpoints: Endpoints, profile: Profile, run: LessonRun | None = None, protocol: str | None = None) -> None:
        if protocol:
            self.protocol = protocol
        self.profile = profile
        self.known_secrets = KnownSecrets.of_accounts(profile.accounts)
        if self.conversation is not None:
            await self.conversation.close()
        port = endpoints.port(self.protocol, self.implicit_tls)
        self.transcript.event(t("transcript_connecting", self.lang, host=endpoints.host_for(self.protocol), port=port, protocol=self.protocol.upper()))
        self.conversation = Conversation(self.protocol, endpoints, self._conversation_event, run, self.implicit_tls)
        await self.conversation.open()
        self._placeholder()

    async def reconnect(self) -> None:
        if self.conversation is not None and self.profile is not None:
            await self.connect(self.conversation.endpoints, self.profile, self.conversation.run)

    async def disconnect(self) -> None:
        if self.conversation is not None:
            await self.conversation.close()

    def _conversation_event(self, event: Any) -> None:
        transcript = self.transcript
        if isinstance(event, Connected):
            transcript.event(t("transcript_connected", self.lang, host=event.host, port=event.port))
        elif isinstance(event, Sent):
            if event.kind != LineKind.MESSAGE or len(event.shown) < 500:
                transcript.client(self.known_secrets.mask(event.shown), clear=event.line)
        elif isinstance(event, Replied):
            clear = list(event.exchange.reply.raw)
            transcript.server([self.known_secrets.mask(line) for line in clear], clear=clear)
            self.post_message(self.Reply(self, event.exchange))
        elif isinstance(event, TLSStarted):
            transcript.event(t("transcript_tls", self.lang, subject=event.subject))
            self.post_message(self.Reply(self, None))
        elif isinstance(event, Closed):
            key = "transcript_failed" if event.failed_to_connect else "transcript_closed"
            transcript.event(t(key, self.lang, reason=event.reason))
            self.post_message(self.Reply(self, None))
        self._placeholder()

    # --- typing --------------------------------------------------------------------------------

    def _placeholder(self) -> None:
        session = self.session
        expecting = session.expecting if session is not None else None
        key = {
            Expect.MESSAGE: "lesson_data_placeholder",
            Expect.AUTH_RESPONSE: "lesson_auth_placeholder",
        }.get(expecting, "lesson_input_placeholder")  # type: ignore[arg-type]
        self.command.placeholder = t(key, self.lang)

    def diagnose(self, line: str) -> list[Any]:
        if self.session is None or self.profile is None or not line:
            return []
        from simulator.engine.validate import validate_line

        try:
            return validate_line(line, protocol=self.protocol, session=self.session, profile=self.profile, lang=self.lang)
        except Exception:  # the validator must never stop anyone from typing
            return []

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.last_diagnostics = self.diagnose(event.value)
        self.query_one(".diagnostics", Static).update(self.render_diagnostics(self.last_diagnostics, event.value))

    def wanted(self, line: str, diagnostic: Any) -> bool:
        """The lesson step asks for exactly the refusal this diagnostic predicts."""
        run = self.conversation.run if self.conversation is not None else None
        return run is not None and bool(diagnostic.reply) and run.wants(line, diagnostic.reply)

    def render_diagnostics(self, diagnostics: list[Any], line: str) -> str:
        if not line:
            return ""
        if not diagnostics:
            return t("diag_ok", self.lang)
        run = self.conversation.run if self.conversation is not None else None
        out = []
        # Errors first: the area is three lines high, so at 80x24 the one that matters is never cut.
        for diagnostic in sorted(diagnostics, key=lambda d: d.severity != "error")[:2]:
            if self.wanted(line, diagnostic):
                mark = t("diag_expected", self.lang)
            elif diagnostic.severity == "error":
                mark = t("diag_error", self.lang)
            elif diagnostic.severity == "warning":
                mark = t("diag_warning", self.lang)
            else:
                mark = t("diag_info", self.lang)
            text = f"{mark} {diagnostic.message}"
            note = run.explanation(None, diagnostic.id) if run is not None else None
            if note:
                text += "\n  " + note
            if diagnostic.code:
                text += f" → {diagnostic.code}"
            if diagnostic.suggestion:
                text += "  " + t("diag_suggestion", self.lang, suggestion=diagnostic.suggestion)
            out.append(text)
        return "\n".join(out)

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        line = event.value
        session = self.session
        in_message = session is not None and session.expecting in (Expect.MESSAGE, Expect.OCTETS)
        if not line and not in_message:
            return
        diagnostics = self.diagnose(line)
        errors = [d for d in diagnostics if d.severity == "error" and not self.wanted(line, d)]
        if self.strict and errors:
            self.query_one(".diagnostics", Static).update(t("lesson_strict_refused", self.lang, message=errors[0].message))
            return
        self.command.value = ""
        self.submitted_at = time.perf_counter()
        await self.send(line, diagnostics)

    async def send(self, line: str, diagnostics: list[Any] | None = None) -> None:
        if self.conversation is None or not self.conversation.connected:
            self.transcript.event(t("transcript_closed", self.lang, reason="not connected"))
            return
        await self.conversation.send(line, diagnostics)
        self.query_one(".diagnostics", Static).update("")

    async def send_message(self, lines: list[str]) -> None:
        """The DATA editor's result: every line, then the final dot."""
        for line in lines:
            await self.send(line)
        self.transcript.event(t("transcript_message_sent", self.lang, lines=len(lines)))
        await self.send(".")

    def set_language(self, lang: str) -> None:
        self.lang = lang
        self._placeholder()
