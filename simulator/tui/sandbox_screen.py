"""Sandbox: any persona (or a profile file), an SMTP console and a POP3 console side by side,
so a learner sends a mail on the left and fetches it on the right; every reply explained."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Header, Select, Static

from mockservers.masking import MASK
from mockservers.profile import load_profile
from mockservers.profile_files import ProfileError, bundled_personas

from .console import Console
from .console_screen import CONSOLE_KEYS, ConsoleScreen
from .dialogs import WatchScreen, watch_commands
from .strings import t
from .keys import Key, bindings
from .widgets import AppFooter, ExplanationPane

SANDBOX_KEYS = [
    Key("f6", "watch", "key_watch"),
    Key("ctrl+r", "reconnect", "key_reconnect", priority=True),
    Key("ctrl+s", "cycle_tls", "key_tls_mode", priority=True),
    Key("escape", "back", "key_back"),
]


class SandboxScreen(ConsoleScreen):
    BINDINGS = bindings([*SANDBOX_KEYS, *CONSOLE_KEYS])

    def __init__(self, persona: str = "rfc") -> None:
        super().__init__()
        self.title = t("sandbox_title", self.app.lang)  # type: ignore[attr-defined]
        self.persona = persona
        self.profile: Any = None
        self.endpoints: Any = None
        self.last: tuple[Console, Any] | None = None

    @property
    def lang(self) -> str:
        return self.app.lang  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="sandbox-top"):
            yield Static(t("sandbox_persona", self.lang), id="persona-label")
            yield Select([(name, name) for name in bundled_personas()], value=self.persona, allow_blank=False, id="persona")
            yield Static("", id="accounts")
        with Horizontal(id="sandbox-consoles"):
            yield Console("smtp", self.lang, id="smtp-console")
            yield Console("pop3", self.lang, id="pop3-console")
        with VerticalScroll(id="sandbox-explain"):
            yield ExplanationPane(t("explain_waiting", self.lang), id="explain")
        yield Static("", id="status")
        yield AppFooter()

    async def on_mount(self) -> None:
        self.remember_consoles()
        await self.start(self.persona)

    async def start(self, persona: str) -> None:
        app: Any = self.app
        try:
            self.profile = load_profile(persona)
        except ProfileError as error:
            self.query_one("#accounts", Static).update(str(error))
            return
        self.persona = persona
        for console in self.query(Console):
            await console.disconnect()
        self.endpoints = await asyncio.to_thread(app.lab.start, self.profile, f"sandbox-{persona}", fresh=False)
        self.secrets_changed()
        self.update_status()
        await self.query_one("#smtp-console", Console).connect(self.endpoints, self.profile)
        await self.query_one("#pop3-console", Console).connect(self.endpoints, self.profile)
        self.query_one("#smtp-console", Console).command.focus()

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.value and event.value != self.persona:
            await self.start(str(event.value))

    def on_console_reply(self, message: Console.Reply) -> None:
        self.last = (message.console, message.exchange)
        if message.console.session is not None:
            self.query_one(ExplanationPane).show(self.lang, message.console.session, message.exchange, self.persona)

    def action_watch(self) -> None:
        if self.endpoints is not None:
            ca = str(self.endpoints.ca_cert) if self.endpoints.ca_cert else None
            self.app.push_screen(WatchScreen(self.lang, watch_commands(self.endpoints, ca)))

    async def action_reconnect(self) -> None:
        for console in self.query(Console):
            await console.reconnect()

    async def action_cycle_tls(self) -> None:
        """The focused console switches between its plain port (STARTTLS typed by hand) and implicit TLS."""
        console = self.focused_console()
        if self.endpoints is None or self.profile is None:
            return
        console.implicit_tls = not console.implicit_tls
        mode = t("sandbox_tls_implicit" if console.implicit_tls else "sandbox_tls_plain", self.lang)
        console.transcript.event(mode)
        await console.connect(self.endpoints, self.profile)
        console.command.focus()

    def secrets_changed(self) -> None:
        """The demo accounts, their secrets masked unless F8 shows them."""
        if self.profile is None:
            return
        accounts = ", ".join(f"{a.address} / {a.secret if self.secrets_shown else MASK}" for a in self.profile.accounts[:3])
        self.query_one("#accounts", Static).update(t("sandbox_accounts", self.lang, accounts=accounts))

    def update_status(self) -> None:
        """Plain and implicit-TLS ports of both protocols, and Ctrl+S to switch the focused console."""
        e = self.endpoints
        if e is None:
            return
        text = t("status_ports", self.lang, smtp=f"{e.host}:{e.smtp}", pop3=f"{e.host}:{e.pop3}")
        if e.smtps and e.pop3s:
            text += " · " + t("status_tls_ports", self.lang, smtps=e.smtps, pop3s=e.pop3s)
        self.query_one("#status", Static).update(text)

    def choose(self, persona: str) -> None:
        """Switch persona (the palette's way; the selector does the same through Select.Changed)."""
        self.query_one("#persona", Select).value = persona

    def set_language(self, lang: str) -> None:
        self.refresh_bindings()
        for console in self.query(Console):
            console.set_language(lang)
        self.update_status()
        if self.last and self.last[0].session is not None:
            self.query_one(ExplanationPane).show(lang, self.last[0].session, self.last[1], self.persona)
