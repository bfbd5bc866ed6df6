"""Key bindings with their footer text in every UI language, on Textual's public API only.

Each key is declared once (`Key`) and becomes one `Binding` per language in the class's
BINDINGS, whose action carries the language: `in_language('zh', 'hint')`. `check_action` hides the
bindings of the other languages (Textual neither shows nor runs a binding whose check says
False), so switching the language is `refresh_bindings()`, and class BINDINGS keep adding to the
app's and Screen's own keys (Tab, Ctrl+P, Ctrl+Q, Ctrl+C) instead of replacing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from textual.binding import Binding

from simulator.engine.knowledge import LANGUAGES

from .strings import t


@dataclass(frozen=True)
class Key:
    """One key: what it does, the UI string that names it, whether the footer shows it."""

    key: str
    action: str
    label: str
    show: bool = True
    #: Checked before the focused widget sees the key (an Input takes Ctrl+E as "end of line").
    priority: bool = False


def bindings(keys: Iterable[Key]) -> list[Binding]:
    """The BINDINGS of a screen or app: every key once per language."""
    return [
        Binding(key.key, f"in_language({lang!r}, {key.action!r})", t(key.label, lang), show=key.show, priority=key.priority)
        for key in keys
        for lang in LANGUAGES
    ]


class LocalizedKeys:
    """Mixed into the app and the screens: runs `in_language` actions and hides other languages."""

    app: Any

    async def action_in_language(self, lang: str, action: str) -> None:
        await self.run_action(action)  # type: ignore[attr-defined]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "in_language" and len(parameters) == 2:
            lang, inner = parameters
            if lang != self.app.lang:
                return False
            return self.key_enabled(str(inner))
        return True

    def key_enabled(self, action: str) -> bool | None:
        """True: shown and works; None: shown dimmed, does nothing now; False: hidden."""
        return True
