"""What the lesson screen and the sandbox share: screens built around consoles.

Leaving one (Esc, Ctrl+Q, the palette's Home, or the app closing any other way) hangs up every
console and stops the servers exactly once. Ctrl+E opens the DATA editor for the console being
typed into, only while its server waits for the message (after 354). F8 shows or hides secrets
(passwords, AUTH responses) in every pane of the screen: masked by default, shown for teaching.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.screen import Screen

from simulator.engine.session import Expect

from .console import Console
from .dialogs import DataEditorScreen
from .keys import Key, LocalizedKeys
from .strings import t

#: Keys every console screen has (each screen adds its own).
CONSOLE_KEYS = [
    Key("ctrl+e", "editor", "key_send_message", priority=True),
    Key("f8", "toggle_secrets", "key_secrets"),
]


class ConsoleScreen(LocalizedKeys, Screen[None]):
    """A screen with one or more consoles over servers the app's lab runs."""

    def __init__(self) -> None:
        super().__init__()
        self.left = False
        self.consoles: list[Console] = []  # kept: leave() may run after the widgets are gone
        self.secrets_shown = False

    def remember_consoles(self) -> None:
        self.consoles = list(self.query(Console))

    def focused_console(self) -> Console:
        """The console holding the focus (the first one when the focus is elsewhere)."""
        return next((console for console in self.consoles if console.has_focus_within), self.consoles[0])

    def key_enabled(self, action: str) -> bool | None:
        if action == "editor":
            session = self.focused_console().session if self.consoles else None
            return session is not None and session.expecting == Expect.MESSAGE
        return True

    def action_editor(self) -> None:
        console = self.focused_console()
        if console.session is None or console.session.expecting != Expect.MESSAGE:
            return

        async def send(lines: list[str] | None) -> None:
            if lines is not None:
                await console.send_message(lines)

        self.app.push_screen(DataEditorScreen(self.lang), send)  # type: ignore[attr-defined]

    def action_toggle_secrets(self) -> None:
        self.secrets_shown = not self.secrets_shown
        for console in self.consoles:
            console.transcript.set_revealed(self.secrets_shown)
            # While shown, every transcript says so on its border, not only in a passing toast.
            console.transcript.border_title = t("secrets_shown_title", self.lang) if self.secrets_shown else ""  # type: ignore[attr-defined]
        self.secrets_changed()
        self.notify(t("secrets_shown" if self.secrets_shown else "secrets_hidden", self.lang), timeout=3)  # type: ignore[attr-defined]

    def secrets_changed(self) -> None:
        """A screen's other panes that hold secrets redraw here (the sandbox's account list)."""

    async def action_back(self) -> None:
        await self.leave()
        self.app.pop_screen()

    async def leave(self) -> None:
        """Hang up, stop the servers, then whatever the screen keeps (once)."""
        if self.left:
            return
        self.left = True
        app: Any = self.app
        for console in self.consoles:
            await console.disconnect()
        await asyncio.to_thread(app.lab.stop)
        await self.after_leave()

    async def after_leave(self) -> None:
        """A screen's own last words (the lesson saves the attempt)."""

    async def on_unmount(self) -> None:
        await self.leave()
