"""The maillab Textual app: screens, app-wide keys, language and theme, servers' lifecycle."""

from __future__ import annotations

import asyncio
import os
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.command import CommandPalette, DiscoveryHit, Hit, Hits, Provider
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from simulator.course.catalog import load_index
from simulator.course.progress import Progress, progress_path

from .dialogs import HelpScreen
from .home_screen import HomeScreen
from .lab import Lab
from .strings import t
from .keys import Key, LocalizedKeys, bindings

#: Keys that work on every screen, added to each screen's own (ctrl+c, copy in an input, comes
#: from Textual's App and keeps its meaning; ctrl+p is declared here so its footer text is in the
#: app's language).
APP_KEYS = [
    Key("ctrl+p", "command_palette", "key_palette", priority=True),
    Key("ctrl+q", "quit", "key_quit", priority=True),
    Key("f1", "help", "key_help"),
    Key("f3", "tools", "key_tools"),
    Key("f4", "reference", "key_reference"),
    Key("f7", "inspector", "key_inspector"),
    Key("ctrl+l", "toggle_language", "key_language", priority=True),
    Key("ctrl+t", "toggle_theme", "key_theme", show=False, priority=True),
]


#: Above any fuzzy score (Textual's matcher has no fixed maximum): a lesson's whole id puts it first.
EXACT_ID_SCORE = float("inf")


class MaillabCommands(Provider):
    """Command palette: every lesson, every screen, every persona's sandbox, the tools, language, theme."""

    def commands(self) -> list[tuple[str, Any]]:
        """(text shown, callable) for everything the palette offers, in the current language."""
        app: Any = self.app
        lang = app.lang
        found: list[tuple[str, Any]] = []
        for lesson_id in app.catalog.lessons:
            lesson = app.catalog.get(lesson_id, lang)
            if lesson is not None:
                found.append((t("palette_lesson", lang, title=lesson.title, id=lesson.id), partial(app.open_lesson, lesson_id)))
        found.append((t("palette_home", lang), app.action_home))
        from mockservers.profile_files import bundled_personas

        for persona in bundled_personas():
            found.append((t("palette_sandbox", lang, persona=persona), partial(app.open_sandbox, persona)))
        found += [
            (t("home_tools", lang), app.action_tools),
            (t("home_reference", lang), app.action_reference),
            (t("inspector_title", lang), app.action_inspector),
            (t("help_title", lang), app.action_help),
            (t("key_language", lang), app.action_toggle_language),
            (t("key_theme", lang), app.action_toggle_theme),
            (t("key_quit", lang), app.action_quit),
        ]
        return found

    async def discover(self) -> Hits:
        for text, command in self.commands():
            yield DiscoveryHit(text, command)

    async def search(self, query: str) -> Hits:
        """Fuzzy matches; a lesson's exact id comes first (`reply-codes` before `reply-codes-qq`)."""
        matcher = self.matcher(query)
        app: Any = self.app
        wanted = query.strip().lower()
        exact = getattr(app.catalog.get(wanted, app.lang), "title", None) if wanted in app.catalog.lessons else None
        for text, command in self.commands():
            score = matcher.match(text)
            if score > 0:
                if exact is not None and text == t("palette_lesson", app.lang, title=exact, id=wanted):
                    score = EXACT_ID_SCORE
                yield Hit(score, matcher.highlight(text), command, text=text)


_SECRET_PROMPT = {
    "en": "Classroom server: the secret of {login} (from your handout), then Enter. Esc: skip.",
    "zh": "课堂服务器：请输入 {login} 的密码（见讲义），按回车。Esc：跳过。",
}


class SecretScreen(ModalScreen[str | None]):
    """Asks once for the secret of the `--login` address (never shown, never saved)."""

    BINDINGS = [("escape", "skip", "Skip")]

    def __init__(self, login: str, lang: str) -> None:
        super().__init__()
        self.login = login
        self.lang = lang

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="secret-dialog"):
            yield Static(_SECRET_PROMPT.get(self.lang, _SECRET_PROMPT["en"]).format(login=self.login))
            yield Input(password=True, id="secret-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value.strip() or None)

    def action_skip(self) -> None:
        self.dismiss(None)


class MaillabApp(LocalizedKeys, App[None]):
    CSS_PATH = "maillab.tcss"
    BINDINGS = bindings(APP_KEYS)
    #: Only maillab's commands, all in the app's language (Textual's system commands are English).
    COMMANDS = {MaillabCommands}
    #: Textual would add its own Ctrl+P binding, described in English; APP_KEYS has a localized one.
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        *,
        data_dir: Path,
        lessons_dirs: list[Path] | None = None,
        lang: str = "en",
        remote_host: str | None = None,
        smtp_port: int = 2525,
        pop3_port: int = 2110,
        login: str | None = None,
        other_login: str | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.lessons_dirs = list(lessons_dirs or [])
        self.lang = lang
        self.login = login.strip().lower() if login else None
        # `--server HOST --login ADDRESS`: lessons use ADDRESS as $user and this secret as $secret.
        self.login_secret: str | None = (os.environ.get("MAILLAB_SECRET") or None) if self.login else None
        # A world class (`--other-login ADDRESS`): the same student on the class's second domain.
        self.other_login = other_login.strip().lower() if other_login else None
        self.lab = Lab(data_dir, remote_host=remote_host, remote_smtp=smtp_port, remote_pop3=pop3_port)
        self.progress = Progress.load(progress_path(data_dir))
        self.catalog = load_index(self.lessons_dirs)
        self.title = t("app_title", lang)

    def on_mount(self) -> None:
        loop = asyncio.get_running_loop()
        # Server events arrive on the reactor thread: hand them over without ever blocking it.
        self.lab.deliver = lambda callback, item: loop.call_soon_threadsafe(callback, item)
        self.push_screen(HomeScreen())
        if self.login and self.lab.remote and not self.login_secret:
            self.push_screen(SecretScreen(self.login, self.lang), self._set_secret)
        # After the first screen is up (not during start-up, where it would compete for the CPU).
        self.set_timer(1.0, lambda: self.run_worker(self._warm_up, thread=True, exclusive=False))

    def _set_secret(self, secret: str | None) -> None:
        self.login_secret = secret

    def _warm_up(self) -> None:
        """Import the lesson machinery while the learner reads the home screen."""
        from . import lesson_screen, sandbox_screen, tools  # noqa: F401

    # --- navigation ----------------------------------------------------------------------------

    def open_lesson(self, lesson_id: str) -> None:
        from .lesson_screen import LessonScreen

        lesson = self.catalog.load(lesson_id, self.lang)
        if lesson is not None:
            self.push_screen(LessonScreen(lesson, self.lessons_dirs))
        else:
            self.notify(t("home_lesson_errors", self.lang, count=len(self.catalog.errors)), severity="error")

    def add_lessons_folder(self, path: Path) -> int:
        """Add an instructor's folder; one without new lessons is not kept (nor are its errors)."""
        before = set(self.catalog.lessons)
        catalog = load_index([*self.lessons_dirs, path])
        added = len(set(catalog.lessons) - before)
        if added:
            self.lessons_dirs.append(path)
            self.catalog = catalog
        return added

    def action_sandbox(self) -> None:
        self.open_sandbox("rfc")

    def open_sandbox(self, persona: str) -> None:
        """The sandbox with `persona`: switches persona when the sandbox is already open."""
        from .lesson_screen import LessonScreen
        from .sandbox_screen import SandboxScreen

        if isinstance(self.screen, SandboxScreen):
            self.screen.choose(persona)
        elif not isinstance(self.screen, LessonScreen):
            self.push_screen(SandboxScreen(persona))

    async def action_home(self) -> None:
        """Back to the home screen from anywhere, leaving lessons and the sandbox cleanly."""
        while len(self.screen_stack) > 2:  # the default screen, then home
            screen = self.screen
            if hasattr(screen, "leave"):
                await screen.leave()
            self.pop_screen()

    def action_command_palette(self) -> None:
        """Textual's palette, its prompt in the app's language."""
        if not CommandPalette.is_open(self):
            self.push_screen(CommandPalette(placeholder=t("palette_prompt", self.lang), id="--command-palette"))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.lang))

    def action_tools(self) -> None:
        from .tools import ToolsScreen

        if isinstance(self.screen, ToolsScreen):
            return
        target = self.screen
        user = secret = ""
        run = getattr(target, "run", None)
        if run is not None:
            user, secret = run.variables.get("user", ""), run.variables.get("secret", "")

        def put(result: str | None) -> None:
            console = self._console_of(target)
            if result and console is not None:
                console.command.value = result
                console.command.focus()

        self.push_screen(ToolsScreen(self.lang, user=user, secret=secret), put)

    def _console_of(self, screen: Any) -> Any:
        from .console import Console

        consoles = list(screen.query(Console)) if screen is not None else []
        focused = [c for c in consoles if c.command.has_focus]
        return (focused or consoles or [None])[0]

    def action_reference(self) -> None:
        from .tools import ReferenceScreen

        if not isinstance(self.screen, ReferenceScreen):
            self.push_screen(ReferenceScreen(self.lang))

    def action_inspector(self) -> None:
        from .inspector_screen import InspectorScreen

        if not isinstance(self.screen, InspectorScreen):
            self.push_screen(InspectorScreen(self.data_dir))

    def action_toggle_language(self) -> None:
        self.lang = "zh" if self.lang == "en" else "en"
        self.title = t("app_title", self.lang)
        from .lesson_screen import LessonScreen

        for screen in self.screen_stack:
            if isinstance(screen, LessonScreen):
                other = self.catalog.load(screen.lesson.id, self.lang)
                if other is not None and other is not screen.lesson and screen.run is not None:
                    screen.lesson = other
                    screen.run.switch_language(other)
                    screen.title = other.title
            if hasattr(screen, "set_language"):
                screen.set_language(self.lang)
            elif isinstance(screen, HomeScreen):
                screen.refresh_texts()
        self.refresh_bindings()
        self.notify(t("lang_switched", self.lang), timeout=2)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"
        self.notify(t("theme_switched", self.lang, theme=self.theme), timeout=2)

    async def action_quit(self) -> None:
        for screen in list(self.screen_stack):
            if hasattr(screen, "leave"):
                await screen.leave()
        await asyncio.to_thread(self.lab.stop)
        await asyncio.to_thread(self.progress.save)
        self.exit()
