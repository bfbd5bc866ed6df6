"""Modal screens reachable from anywhere: help, telnet commands, the DATA editor."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea

from .lab import Endpoints
from .strings import t


class HelpScreen(ModalScreen[None]):
    """F1: what the keys do and how a lesson works."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, lang: str, context: str = "") -> None:
        super().__init__()
        self.lang = lang
        self.context_text = context

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Static(t("help_title", self.lang), classes="dialog-title")
            yield Static(t("help_body", self.lang), id="help-body")
            if self.context_text:
                yield Static(self.context_text, id="help-context")


def watch_commands(endpoints: Endpoints, ca_path: str | None) -> list[str]:
    """Ready-to-copy commands that reach the same servers from a real terminal."""
    host, smtp, pop3 = endpoints.host, endpoints.smtp, endpoints.pop3
    smtp_host = endpoints.host_for("smtp")  # a world lesson's MX has an address of its own
    ca = f" -CAfile {ca_path}" if ca_path else ""
    commands = [
        f"telnet {smtp_host} {smtp}",
        f"nc -C {smtp_host} {smtp}",
        f"openssl s_client -starttls smtp -crlf -quiet{ca} -connect {smtp_host}:{smtp}",
        f"telnet {host} {pop3}",
        f"openssl s_client -starttls pop3 -crlf -quiet{ca} -connect {host}:{pop3}",
        f"swaks --server {smtp_host}:{smtp} --to <address>",
    ]
    # Implicit TLS (465/995 style, RFC 8314): the handshake first, so no -starttls.
    if endpoints.smtps:
        commands.append(f"openssl s_client -crlf -quiet{ca} -connect {smtp_host}:{endpoints.smtps}")
    if endpoints.pop3s:
        commands.append(f"openssl s_client -crlf -quiet{ca} -connect {host}:{endpoints.pop3s}")
    if endpoints.dns is not None:
        dns_host, dns_port = endpoints.dns
        commands.append(f"dig @{dns_host} -p {dns_port} MX {endpoints.dns_example or '<domain>'}")
    return commands


class WatchScreen(ModalScreen[None]):
    """F6: do the lesson in a real terminal; maillab follows that session."""

    BINDINGS = [Binding("escape,f6,q", "dismiss", "Close")]

    def __init__(self, lang: str, commands: list[str]) -> None:
        super().__init__()
        self.lang = lang
        self.commands = commands

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="watch-dialog"):
            yield Static(t("watch_title", self.lang), classes="dialog-title")
            yield Static(t("watch_body", self.lang))
            yield Static("\n".join(self.commands), id="watch-commands")
            yield Static(t("watch_telnet_hint", self.lang))


class DataEditorScreen(ModalScreen[list[str] | None]):
    """After 354: write the whole message; Ctrl+S sends it line by line and the final dot."""

    # Esc is a priority key: the text area would otherwise take it to move the focus.
    BINDINGS = [Binding("ctrl+s", "send", "Send", priority=True), Binding("escape", "cancel", "Cancel", priority=True)]

    def __init__(self, lang: str, text: str = "") -> None:
        super().__init__()
        self.lang = lang
        self.initial = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="data-dialog"):
            yield Static(t("data_editor_title", self.lang), classes="dialog-title")
            yield TextArea(self.initial, id="data-editor", soft_wrap=False, tab_behavior="indent")
            yield Static("", id="data-notes")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()
        self._notes()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self._notes()

    def _notes(self) -> None:
        lines = self.query_one(TextArea).text.split("\n")
        notes = [
            t("data_dot_warning", self.lang, number=index, rest=line[1:])
            for index, line in enumerate(lines, start=1)
            if line.startswith(".")
        ]
        self.query_one("#data-notes", Static).update("\n".join(notes[:3]))

    def action_send(self) -> None:
        lines = self.query_one(TextArea).text.split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        if lines and lines[-1] == ".":
            lines.pop()
        # Dot-stuffing (RFC 5321 4.5.2): a line that starts with "." gets one more, so it survives.
        self.dismiss(["." + line if line.startswith(".") else line for line in lines])

    def action_cancel(self) -> None:
        self.dismiss(None)
