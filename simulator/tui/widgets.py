"""The TUI's own widgets: the transcript and the explanation pane."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.containers import VerticalScroll
from textual.app import ComposeResult
from textual.widgets import Footer, RichLog, Static
from textual.widgets.markdown import MarkdownFence

from simulator.engine.explain import AFTER_CONNECT, explain_reply
from simulator.engine.session import Exchange, POP3Session, SMTPSession
from simulator.engine.validate import state_name

from .strings import t

CLIENT_STYLE = "bold cyan"
SERVER_STYLE = "green"
SERVER_ERROR_STYLE = "bold red"
SERVER_WAIT_STYLE = "yellow"
EVENT_STYLE = "italic magenta"
EXTERNAL_STYLE = "dim"


#: The key of the command palette, kept in view at the right end of every footer.
PALETTE_KEY = "ctrl+p"


class AppFooter(Footer):
    """Textual's compact footer, with the palette key docked at its right end.

    The app declares Ctrl+P itself (so its text follows the app's language); Textual's own palette
    key, which it would dock there, is switched off. Docked, the one key that reaches every
    command stays visible however many keys a narrow terminal cuts.
    """

    def __init__(self) -> None:
        super().__init__(compact=True)

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            if getattr(widget, "key", None) == PALETTE_KEY:
                widget.add_class("palette-key")
            yield widget


#: Columns one Left/Right press moves the lesson's code blocks.
FENCE_SCROLL_STEP = 8


class ProsePane(VerticalScroll):
    """The lesson text. Left/Right also scroll its code blocks sideways.

    A code block keeps its lines whole (an SMTP line cut or wrapped is a different line), so in a
    narrow pane it scrolls sideways; a keyboard user reaches the rest of the line with Left/Right
    on the focused pane, as a mouse user does with the scroll bar.
    """

    def action_scroll_left(self) -> None:
        if not self.scroll_code_blocks(-FENCE_SCROLL_STEP):
            super().action_scroll_left()

    def action_scroll_right(self) -> None:
        if not self.scroll_code_blocks(FENCE_SCROLL_STEP):
            super().action_scroll_right()

    def scroll_code_blocks(self, columns: int) -> bool:
        """Scroll every code block wider than the pane by `columns`; False when none is."""
        wide = [fence for fence in self.query(MarkdownFence) if fence.max_scroll_x > 0]
        for fence in wide:
            fence.scroll_relative(x=columns, animate=False)
        return bool(wide)


class Transcript(RichLog):
    """What was said on the wire: client lines (›) and server replies (‹), grouped by reply.

    Secrets are masked (mockservers/masking.py) unless `revealed`: a teacher may show them, and
    toggling redraws every line, since each keeps both its masked and its clear form.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(wrap=True, markup=False, highlight=False, max_lines=5000, min_width=20, **kwargs)
        self.plain_lines: list[str] = []  # for tests and copy
        self.revealed = False
        self._entries: list[tuple[Text, Text]] = []  # (masked, clear) of every line, for redrawing

    def _add(self, text: Text, clear: Text | None = None) -> None:
        self._entries.append((text, clear or text))
        self._entries = self._entries[-5000:]
        self._show(clear if self.revealed and clear is not None else text)

    def _show(self, text: Text) -> None:
        self.plain_lines.append(text.plain)
        self.write(text)

    def set_revealed(self, revealed: bool) -> None:
        """Show secrets in clear (True) or masked (False), for every line already written too."""
        self.revealed = revealed
        self.clear()
        self.plain_lines = []
        for masked, clear in self._entries:
            self._show(clear if revealed else masked)

    def client(self, line: str, source: str = "", clear: str | None = None) -> None:
        """A line the client sent, masked; `clear` is its unmasked form when it carried a secret."""
        prefix = f"[{source}] " if source else ""

        def text(body: str) -> Text:
            return Text.assemble((prefix, EXTERNAL_STYLE), ("› ", CLIENT_STYLE), (body, CLIENT_STYLE))

        self._add(text(line), text(clear) if clear is not None and clear != line else None)

    def server(self, lines: list[str], source: str = "", clear: list[str] | None = None) -> None:
        """A reply, masked; `clear` is its unmasked form (a reply may echo a secret the client typed)."""
        prefix = f"[{source}] " if source else ""
        first = lines[0] if lines else ""
        style = SERVER_STYLE
        if first[:1] in ("4", "5") or first.startswith("-ERR"):
            style = SERVER_ERROR_STYLE
        elif first[:1] == "3" or first.startswith("+ "):
            style = SERVER_WAIT_STYLE
        for index, line in enumerate(lines):
            marker = "‹ " if index == 0 else "┆ "
            clear_line = clear[index] if clear is not None and index < len(clear) else line
            masked = Text.assemble((prefix, EXTERNAL_STYLE), (marker, style), (line, style))
            shown_clear = Text.assemble((prefix, EXTERNAL_STYLE), (marker, style), (clear_line, style))
            self._add(masked, shown_clear if clear_line != line else None)

    def event(self, text: str) -> None:
        self._add(Text(f"— {text}", style=EVENT_STYLE))


class ExplanationPane(Static):
    """Explains the last reply and shows the session state and what may be sent next."""

    shown_at = 0.0  # when the last explanation was put on screen (for the latency benchmark)

    def show(
        self,
        lang: str,
        session: SMTPSession | POP3Session,
        exchange: Exchange | None = None,
        persona: str | None = None,
        note: str | None = None,
    ) -> None:
        parts: list[str] = []
        protocol = "pop3" if isinstance(session, POP3Session) else "smtp"
        if exchange is not None:
            after = exchange.after if exchange.sent is not None else AFTER_CONNECT
            explanation = explain_reply(list(exchange.reply.raw), protocol=protocol, after=after, persona=persona, lang=lang)
            parts.append(explanation.render_text())
        else:
            parts.append(t("explain_waiting", lang))
        if note:
            parts.append(f"{t('lesson_instructor_note', lang)}: {note}")
        parts.append(state_summary(session, lang))
        self.update(Text("\n\n".join(parts)))
        self.shown_at = time.perf_counter()


def state_summary(session: SMTPSession | POP3Session, lang: str) -> str:
    """Greeted, TLS, who is logged in, the envelope, and what may be sent now."""
    lines = [f"[{t('state_title', lang)}]"]
    flags = []
    if isinstance(session, SMTPSession):
        lines.append(t("state_smtp", lang, state=state_name(session, lang)))
        if session.helo_domain:
            flags.append(t("state_greeted", lang))
    else:
        lines.append(t("state_pop3", lang, state=state_name(session, lang)))
    if session.tls_active:
        flags.append(t("state_tls", lang))
    if session.authenticated_user:
        flags.append(t("state_user", lang, user=session.authenticated_user))
    if flags:
        lines.append(" · ".join(flags))
    if isinstance(session, SMTPSession) and session.mail_from is not None:
        recipients = ", ".join(session.recipients) or "—"
        lines.append(t("state_envelope", lang, sender=session.mail_from or "<>", recipients=recipients))
    if isinstance(session, POP3Session) and session.deleted:
        lines.append(t("state_deleted", lang, numbers=", ".join(map(str, sorted(session.deleted)))))
    commands = session.next_commands()
    if commands:
        lines.append(t("state_next", lang, commands=" ".join(commands[:12])))
    return "\n".join(lines)
