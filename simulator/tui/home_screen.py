"""Home: tracks and lessons with progress and time, continue where you left off, sandbox,
tools, reference, and a way to open an instructor's lesson folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from .strings import t
from .keys import Key, LocalizedKeys, bindings
from .widgets import AppFooter

HOME_KEYS = [
    Key("f5", "sandbox", "key_sandbox"),
    Key("ctrl+o", "open_folder", "home_open_folder", priority=True),
    Key("escape", "close_folder", "key_back", show=False),
]


class HomeScreen(LocalizedKeys, Screen[None]):
    BINDINGS = bindings(HOME_KEYS)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="home"):
            with Horizontal(id="home-actions"):
                yield Button("", id="continue", variant="primary")
                yield Button("", id="sandbox")
                yield Button("", id="tools")
                yield Button("", id="reference")
            yield Static("", id="home-title", classes="section-title")
            yield OptionList(id="lessons")
            yield Input(id="folder", classes="hidden")
            yield Static("", id="home-notes")
        yield AppFooter()

    @property
    def lang(self) -> str:
        return self.app.lang  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        self.refresh_texts()
        self.query_one(OptionList).focus()

    def on_screen_resume(self) -> None:
        self.refresh_texts()

    def refresh_texts(self) -> None:
        app: Any = self.app
        lang = self.lang
        self.query_one("#home-title", Static).update(t("home_title", lang))
        self.query_one("#sandbox", Button).label = t("home_sandbox", lang)
        self.query_one("#tools", Button).label = t("home_tools", lang)
        self.query_one("#reference", Button).label = t("home_reference", lang)
        last = app.progress.last()
        lesson = app.catalog.get(last[0], lang) if last else None
        cont = self.query_one("#continue", Button)
        cont.label = t("home_continue", lang, lesson=lesson.title) if lesson else t("home_nothing_to_continue", lang)
        cont.disabled = lesson is None
        self.query_one("#folder", Input).placeholder = t("home_folder_prompt", lang)
        notes = []
        if app.catalog.errors:
            notes.append(t("home_lesson_errors", lang, count=len(app.catalog.errors)))
        self.query_one("#home-notes", Static).update("\n".join(notes))
        self.fill_lessons()

    def fill_lessons(self) -> None:
        app: Any = self.app
        lang = self.lang
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        for track, ids in app.catalog.ordered():
            title = track.title.get(lang) or track.title.get("en") or track.id
            options.add_option(Option(f"── {title} ──", disabled=True))
            for lesson_id in ids:
                lesson = app.catalog.get(lesson_id, lang)
                if lesson is None:
                    continue
                entry = app.progress.entries().get(lesson.id, {})
                done, total = len(entry.get("completed", [])), entry.get("total", 0)
                finished = bool(total) and done >= total
                state = t("home_done", lang) if finished else t("home_steps", lang, done=done, total=total) if done else ""
                minutes = t("home_minutes", lang, minutes=lesson.minutes)
                mark = "✔" if finished else "…" if done else " "
                options.add_option(Option(f"{mark} {lesson.title}  · {minutes}" + (f" · {state}" if state else ""), id=lesson.id))
        if highlighted is not None and highlighted < options.option_count:
            options.highlighted = highlighted
        else:  # at start: the lesson to continue, else the first lesson, so Enter opens it
            last = app.progress.last()
            wanted = last[0] if last else None
            ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
            index = ids.index(wanted) if wanted is not None and wanted in ids else next((i for i, key in enumerate(ids) if key), None)
            options.highlighted = index

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.app.open_lesson(event.option.id)  # type: ignore[attr-defined]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        app: Any = self.app
        if event.button.id == "continue":
            last = app.progress.last()
            if last:
                app.open_lesson(last[0])
        elif event.button.id == "sandbox":
            app.action_sandbox()
        elif event.button.id == "tools":
            app.action_tools()
        elif event.button.id == "reference":
            app.action_reference()

    def action_sandbox(self) -> None:
        self.app.action_sandbox()  # type: ignore[attr-defined]

    def action_open(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            option = options.get_option_at_index(options.highlighted)
            if option.id:
                self.app.open_lesson(option.id)  # type: ignore[attr-defined]

    def action_open_folder(self) -> None:
        folder = self.query_one("#folder", Input)
        folder.remove_class("hidden")
        folder.focus()

    def key_enabled(self, action: str) -> bool | None:
        """Esc closes the folder prompt; it means nothing while the prompt is hidden."""
        if action == "close_folder":
            return self.is_mounted and not self.query_one("#folder", Input).has_class("hidden")
        return True

    def action_close_folder(self) -> None:
        folder = self.query_one("#folder", Input)
        folder.value = ""
        folder.add_class("hidden")
        self.query_one(OptionList).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        app: Any = self.app
        text = event.value.strip()
        path = Path(text).expanduser()
        if not text or not path.is_dir():
            self.notify(t("home_folder_missing", self.lang, path=text or "—"), severity="error", timeout=4)
        else:
            count = app.add_lessons_folder(path)
            if count:
                self.notify(t("home_folder_loaded", self.lang, count=count, path=path), timeout=4)
            else:
                self.notify(t("home_folder_empty", self.lang, path=path), severity="error", timeout=4)
        self.action_close_folder()
        self.refresh_texts()
