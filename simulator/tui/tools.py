"""F3 tools: base64 (the seed sends learners to a web page for this), AUTH PLAIN/LOGIN, CRAM-MD5
and APOP calculators; F4 reference: commands and reply codes in both languages, searchable."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from mailprotocol import codec as sasl
from simulator.engine import knowledge

from .strings import t


class ToolsScreen(ModalScreen[str | None]):
    """Calculators; "Put into the command line" returns the computed line to the caller."""

    BINDINGS = [Binding("escape,f3", "dismiss_tools", "Close")]

    def __init__(self, lang: str, user: str = "", secret: str = "", challenge: str = "", timestamp: str = "") -> None:
        super().__init__()
        self.lang = lang
        self.defaults = {"user": user, "secret": secret, "challenge": challenge, "timestamp": timestamp}
        self.results: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        lang = self.lang
        with Vertical(classes="dialog", id="tools-dialog"):
            yield Static(t("tools_title", lang), classes="dialog-title")
            with TabbedContent(id="tools-tabs"):
                with TabPane(t("tools_base64", lang), id="tab-base64"):
                    yield Input(placeholder=t("tools_text", lang), id="b64-text")
                    yield Static("", id="b64-encoded")
                    yield Input(placeholder=t("tools_encoded", lang), id="b64-input")
                    yield Static("", id="b64-decoded")
                    yield Button(t("tools_use", lang), id="use-b64")
                with TabPane(t("tools_plain", lang), id="tab-plain"):
                    yield Input(self.defaults["user"], placeholder=t("tools_user", lang), id="plain-user")
                    yield Input(self.defaults["secret"], placeholder=t("tools_secret", lang), id="plain-secret", password=False)
                    yield Static("", id="plain-result")
                    yield Static("", id="login-result")
                    yield Button(t("tools_use", lang), id="use-plain")
                with TabPane(t("tools_cram", lang), id="tab-cram"):
                    yield Input(self.defaults["user"], placeholder=t("tools_user", lang), id="cram-user")
                    yield Input(self.defaults["secret"], placeholder=t("tools_secret", lang), id="cram-secret")
                    yield Input(self.defaults["challenge"], placeholder=t("tools_challenge", lang), id="cram-challenge")
                    yield Static("", id="cram-result")
                    yield Button(t("tools_use", lang), id="use-cram")
                with TabPane(t("tools_apop", lang), id="tab-apop"):
                    yield Input(self.defaults["user"], placeholder=t("tools_user", lang), id="apop-user")
                    yield Input(self.defaults["secret"], placeholder=t("tools_secret", lang), id="apop-secret")
                    yield Input(self.defaults["timestamp"], placeholder=t("tools_timestamp", lang), id="apop-timestamp")
                    yield Static("", id="apop-result")
                    yield Button(t("tools_use", lang), id="use-apop")

    def on_mount(self) -> None:
        self.recompute()
        self.query_one("#b64-text", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.recompute()

    def value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value

    def recompute(self) -> None:
        lang = self.lang
        text = self.value("b64-text")
        encoded = sasl.b64encode_text(text) if text else ""
        self.query_one("#b64-encoded", Static).update(encoded)
        raw = self.value("b64-input").strip()
        decoded_line = ""
        self.results["b64"] = encoded or raw
        if raw:
            try:
                decoded = sasl.b64decode_strict(raw)
                decoded_line = t("tools_decoded", lang, text=decoded.decode("utf-8", "replace").replace("\0", "\\0"))
            except sasl.SASLError as problem:
                decoded_line = t("tools_not_base64", lang, problem=str(problem))
        self.query_one("#b64-decoded", Static).update(decoded_line)

        user, secret = self.value("plain-user"), self.value("plain-secret")
        payload = sasl.plain_payload(user, secret) if user else ""
        self.results["plain"] = f"AUTH PLAIN {payload}" if payload else ""
        self.query_one("#plain-result", Static).update(t("tools_plain_result", lang, payload=payload) if payload else "")
        self.query_one("#login-result", Static).update(
            t("tools_login_result", lang, user=sasl.b64encode_text(user), secret=sasl.b64encode_text(secret)) if user else ""
        )

        challenge_text = self.value("cram-challenge").strip()
        challenge = challenge_text.encode()
        if challenge_text and not challenge_text.startswith("<"):
            try:
                challenge = sasl.b64decode_strict(challenge_text)
            except sasl.SASLError:
                pass
        cram_user, cram_secret = self.value("cram-user"), self.value("cram-secret")
        if cram_user and challenge_text:
            digest = sasl.cram_md5_digest(cram_secret, challenge)
            line = sasl.cram_md5_response(cram_user, cram_secret, challenge)
            self.results["cram"] = line
            self.query_one("#cram-result", Static).update(t("tools_cram_result", lang, digest=digest, line=line))
        else:
            self.results["cram"] = ""
            self.query_one("#cram-result", Static).update("")

        apop_user, apop_secret, stamp = self.value("apop-user"), self.value("apop-secret"), self.value("apop-timestamp").strip()
        if apop_user and stamp:
            digest = sasl.apop_digest(stamp, apop_secret)
            self.results["apop"] = f"APOP {apop_user} {digest}"
            self.query_one("#apop-result", Static).update(t("tools_apop_result", lang, user=apop_user, digest=digest))
        else:
            self.results["apop"] = ""
            self.query_one("#apop-result", Static).update("")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        kind = (event.button.id or "").removeprefix("use-")
        result = self.results.get(kind, "")
        if result:
            self.dismiss(result)

    def action_dismiss_tools(self) -> None:
        self.dismiss(None)


def reference_entries(lang: str) -> list[tuple[str, str, str]]:
    """(id, one-line title, full text) for every command and reply code, in `lang`."""
    entries: list[tuple[str, str, str]] = []
    for verb, entry in knowledge.smtp_commands().items():
        summary = knowledge.localized(entry.get("summary", ""), lang)  # type: ignore[arg-type]
        mistakes = "\n".join("- " + knowledge.localized(m, lang) for m in entry.get("mistakes", []))  # type: ignore[arg-type]
        body = f"SMTP {verb}\n{entry.get('syntax', '')}   ({entry.get('rfc', '')})\n\n{summary}\n\n{mistakes}"
        entries.append((f"smtp-{verb}", f"SMTP {verb:<9} {summary[:60]}", body))
    for verb, entry in knowledge.pop3_commands().items():
        summary = knowledge.localized(entry.get("summary", ""), lang)  # type: ignore[arg-type]
        body = f"POP3 {verb}\n{entry.get('syntax', '')}   ({entry.get('rfc', '')})\n\n{summary}"
        entries.append((f"pop3-{verb}", f"POP3 {verb:<9} {summary[:60]}", body))
    for code, entry in knowledge.reply_codes().items():
        meaning = knowledge.localized(entry.get("meaning", ""), lang)  # type: ignore[arg-type]
        following = knowledge.localized(entry.get("next", ""), lang)  # type: ignore[arg-type]
        body = f"{code} {entry.get('text', '')}\n({entry.get('rfc', '')})\n\n{meaning}\n\n{following}"
        entries.append((f"code-{code}", f"{code}  {meaning[:64]}", body))
    return entries


class ReferenceScreen(ModalScreen[None]):
    """Searchable commands and reply codes."""

    BINDINGS = [Binding("escape,f4", "dismiss", "Close")]

    def __init__(self, lang: str, query: str = "") -> None:
        super().__init__()
        self.lang = lang
        self.query_text = query
        self.entries = reference_entries(lang)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="reference-dialog"):
            yield Static(t("reference_title", self.lang), classes="dialog-title")
            yield Input(self.query_text, placeholder=t("reference_search", self.lang), id="reference-search")
            with Horizontal(id="reference-body"):
                yield OptionList(id="reference-list")
                with VerticalScroll(id="reference-detail-pane"):
                    yield Static("", id="reference-detail")

    def on_mount(self) -> None:
        self.filter(self.query_text)
        self.query_one("#reference-search", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter(event.value)

    def filter(self, text: str) -> None:
        needle = text.strip().lower()
        options = self.query_one(OptionList)
        options.clear_options()
        shown = [e for e in self.entries if not needle or needle in e[1].lower() or needle in e[2].lower()]
        options.add_options([Option(title, id=entry_id) for entry_id, title, _ in shown])
        if shown:
            self.query_one("#reference-detail", Static).update(shown[0][2])

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        for entry_id, _, body in self.entries:
            if entry_id == event.option.id:
                self.query_one("#reference-detail", Static).update(body)
