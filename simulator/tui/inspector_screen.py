"""F7, the message inspector: browse every mailbox the app's servers and worlds hold, open a
message, read its Received chain as a timeline, its authentication results, walk its MIME tree
with each part decoded, and show the raw source beside it. Keyboard only: arrows and Enter to go
in, Escape to come back, `r` for the raw source, Tab between the tree and the part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, OptionList, Static, Tree
from textual.widgets.option_list import Option

from simulator.engine.mail_sources import MailSource, MessageEntry, find_sources, mailboxes, messages, read
from simulator.engine.message_view import MessageView, Part, decode_part, view_message

from .strings import t
from .keys import Key, LocalizedKeys, bindings
from .widgets import AppFooter

INSPECTOR_KEYS = [
    Key("escape", "back", "key_back"),
    Key("r", "toggle_raw", "key_raw"),
]


class InspectorScreen(LocalizedKeys, Screen[None]):
    """Four levels, one at a time: sources, mailboxes, messages, then one message."""

    BINDINGS = bindings(INSPECTOR_KEYS)

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.source: MailSource | None = None
        self.address: str | None = None
        self.entries: list[MessageEntry] = []
        self.view: MessageView | None = None
        self._sources: list[MailSource] = []
        self._mailboxes: list[str] = []

    @property
    def lang(self) -> str:
        return self.app.lang  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="inspector"):
            yield Static("", id="inspector-where", classes="section-title")
            yield OptionList(id="inspector-list")
            with Vertical(id="inspector-message", classes="hidden"):
                yield Static("", id="inspector-summary")
                with Horizontal(id="inspector-body"):
                    yield Tree("", id="mime-tree")
                    with VerticalScroll(id="part-scroll"):
                        yield Static("", id="part-view")
                    with VerticalScroll(id="raw-scroll", classes="hidden"):
                        yield Static("", id="raw-view", markup=False)
        yield AppFooter()

    def on_mount(self) -> None:
        self.set_language(self.lang)
        self.show_sources()

    def set_language(self, lang: str) -> None:
        self.refresh_bindings()
        self.title = t("inspector_title", lang)
        if self.view is not None:
            self._show_summary()
        else:
            self._update_where()

    # -- levels ------------------------------------------------------------------------------

    def _update_where(self) -> None:
        lang = self.lang
        if self.source is None:
            text = t("inspector_sources", lang, folder=str(self.data_dir))
        elif self.address is None:
            text = t("inspector_mailboxes", lang, source=self.source.label)
        else:
            text = t("inspector_messages", lang, address=self.address, source=self.source.label)
        self.query_one("#inspector-where", Static).update(text)

    def _fill(self, labels: list[str], empty_key: str) -> None:
        options = self.query_one("#inspector-list", OptionList)
        options.clear_options()
        if labels:
            options.add_options([Option(label, id=str(index)) for index, label in enumerate(labels)])
            options.highlighted = 0
        else:
            options.add_option(Option(t(empty_key, self.lang), disabled=True))
        self.query_one("#inspector-message").add_class("hidden")
        options.remove_class("hidden")
        options.focus()
        self._update_where()

    def show_sources(self) -> None:
        self.source = self.address = None
        self.view = None
        self._sources = find_sources(self.data_dir)
        self._fill([s.label for s in self._sources], "inspector_no_mail")

    def show_mailboxes(self, source: MailSource) -> None:
        self.source, self.address, self.view = source, None, None
        self._mailboxes = mailboxes(source)
        self._fill(self._mailboxes, "inspector_no_mailboxes")

    def show_messages(self, address: str) -> None:
        assert self.source is not None
        self.address, self.view = address, None
        self.entries = messages(self.source, address)
        self._fill(
            [f"{i + 1}. {e.subject or t('inspector_no_subject', self.lang)}  · {e.sender}  · {e.size} B" for i, e in enumerate(self.entries)],
            "inspector_empty_mailbox",
        )

    def show_message(self, entry: MessageEntry) -> None:
        assert self.source is not None and self.address is not None
        self.view = view_message(read(self.source, self.address, entry))
        self.query_one("#inspector-list", OptionList).add_class("hidden")
        self.query_one("#inspector-message").remove_class("hidden")
        self._show_summary()
        self.query_one("#raw-view", Static).update(self.view.raw)
        tree: Tree[Part] = self.query_one("#mime-tree", Tree)
        tree.clear()
        parts = self.view.parts
        tree.root.set_label(self._part_label(parts[0]))
        tree.root.data = parts[0]
        nodes = {"": tree.root}
        for part in parts[1:]:
            parent = nodes.get(part.path.rpartition(".")[0], tree.root)
            node = parent.add(self._part_label(part), data=part, expand=True)
            nodes[part.path] = node
        tree.root.expand_all()
        tree.move_cursor(tree.root)
        tree.focus()
        self._show_part(parts[0])

    def _part_label(self, part: Part) -> str:
        details = [part.content_type]
        if part.charset:
            details.append(part.charset)
        if part.encoding not in ("7bit", "8bit", ""):
            details.append(part.encoding)
        if part.filename:
            details.append(f"📎 {part.filename}" if part.is_attachment else part.filename)
        return f"{part.path or '·'} " + " · ".join(details)

    def _show_summary(self) -> None:
        view, lang = self.view, self.lang
        assert view is not None
        wanted = ("from", "to", "subject", "date")
        lines = [f"{name}: {value}" for name, value in view.headers if name.lower() in wanted]
        lines.append("")
        lines.append(t("inspector_timeline", lang))
        for number, hop in enumerate(view.hops, start=1):
            security = t("inspector_tls" if hop.tls else "inspector_no_tls", lang)
            lines.append(f"  {number}. {hop.sender or '?'} → {hop.receiver or '?'} · {hop.protocol or '?'} · {security} · {hop.date}")
        if not view.hops:
            lines.append("  " + t("inspector_no_hops", lang))
        if view.auth_results:
            lines.append(t("inspector_auth", lang))
            lines += [f"  {method}={result}" for method, result in view.auth_results]
        if view.truncated or view.parts_truncated:
            lines.append(t("inspector_truncated", lang))
        self.query_one("#inspector-summary", Static).update("\n".join(lines))

    def _show_part(self, part: Part) -> None:
        header = t("inspector_part", self.lang, path=part.path or "·", type=part.content_type, size=part.size)
        self.query_one("#part-view", Static).update(f"{header}\n\n{decode_part(part)}")

    # -- keys and events ---------------------------------------------------------------------

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is None:
            return
        index = int(event.option.id)
        if self.source is None:
            self.show_mailboxes(self._sources[index])
        elif self.address is None:
            self.show_messages(self._mailboxes[index])
        else:
            self.show_message(self.entries[index])

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        part: Any = event.node.data
        if part is not None:
            self._show_part(part)

    def action_toggle_raw(self) -> None:
        if self.view is not None:
            self.query_one("#raw-scroll").toggle_class("hidden")

    def action_back(self) -> None:
        if self.view is not None:
            assert self.address is not None
            self.show_messages(self.address)
        elif self.address is not None:
            assert self.source is not None
            self.show_mailboxes(self.source)
        elif self.source is not None:
            self.show_sources()
        else:
            self.app.pop_screen()
