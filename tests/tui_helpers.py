"""Helpers for driving the maillab TUI with Textual's Pilot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Callable

from simulator.tui.app import MaillabApp
from simulator.tui.lesson_screen import LessonScreen
from waiting import wait_for

SNAPSHOTS = Path(__file__).with_name("snapshots")


def make_app(tmp_path: Path, lang: str = "en", **options: Any) -> MaillabApp:
    return MaillabApp(data_dir=tmp_path / "data", lang=lang, **options)


async def type_text(pilot: Any, text: str) -> None:
    keys = ["space" if ch == " " else ch for ch in text]
    await pilot.press(*keys)


async def type_lines(pilot: Any, lines: list[str]) -> None:
    """Type lines into the focused text area, Enter between them (the DATA editor)."""
    for number, line in enumerate(lines):
        if number:
            await pilot.press("enter")
        if line:
            await type_text(pilot, line)


async def open_by_keys(pilot: Any, app: MaillabApp, lesson_id: str) -> LessonScreen:
    """Ctrl+P, the lesson's id, Enter: how a learner opens a lesson by name."""
    from textual.command import CommandPalette

    await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
    await type_text(pilot, lesson_id)
    await pilot.pause(0.3)  # the palette searches as it is typed
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, LessonScreen) and bool(app.screen.query("Console")))
    screen = app.screen
    assert isinstance(screen, LessonScreen) and screen.lesson.id == lesson_id, f"the palette opened {screen.lesson.id!r}"
    return screen


async def open_lesson(pilot: Any, app: MaillabApp, lesson_id: str) -> LessonScreen:
    """Open a lesson by keys and wait until its console has the server's greeting."""
    await open_by_keys(pilot, app, lesson_id)
    await wait_for(pilot, lambda: isinstance(app.screen, LessonScreen) and app.screen.run is not None and bool(app.screen.query("Console")))
    screen = app.screen
    assert isinstance(screen, LessonScreen)
    await wait_for(pilot, lambda: screen.console.conversation is not None and screen.console.conversation.connected)
    await wait_for(pilot, lambda: screen.console.session.greeting is not None)
    return screen


async def send_line(pilot: Any, screen: Any, line: str, console: Any = None) -> None:
    """Type a line into the console's command input and press Enter; wait for the answer."""
    console = console or screen.console
    for _ in range(12):  # Tab to the console's command line (entering a screen puts it there)
        if screen.app.focused is console.command:
            break
        await pilot.press("tab")
    assert screen.app.focused is console.command, screen.app.focused
    before = len(console.session.history) if console.session is not None else 0
    sent_on = console.session
    expects_reply = True
    if console.command.value:
        await pilot.press("ctrl+u")  # clear what is left on the line
    await type_text(pilot, line)
    await pilot.press("enter")
    session = console.session
    from simulator.engine.session import Expect

    if session.data_mode if hasattr(session, "data_mode") else False:
        expects_reply = line == "."
    if expects_reply:
        # The answer may end the step and the lesson switch protocols (a new session) at once.
        await wait_for(pilot, lambda: console.session is not sent_on or len(console.session.history) > before or console.session.closed)


async def wait_until_drawn(pilot: Any, app: MaillabApp, timeout: float = 10.0) -> str:
    """Wait until two screenshots 0.1 s apart are the same (the footer draws after the screen)."""
    deadline = asyncio.get_running_loop().time() + timeout
    previous = None
    while asyncio.get_running_loop().time() < deadline:
        current = normalize_svg(app.export_screenshot(title="maillab"))
        shown = [key for key, active in app.screen.active_bindings.items() if active.binding.show] if app.screen.query("Footer") else []
        first_key = shown[0].replace("ctrl+", "^") if shown else ""
        footer_drawn = not shown or f">{first_key}<" in current or f"&#160;{first_key}&#160;" in current  # the footer's first key
        if current == previous and footer_drawn:
            return current
        previous = current
        await pilot.pause(0.1)
    raise AssertionError("the screen kept changing")


def normalize_svg(svg: str) -> str:
    """Remove what changes between runs: generated ids, ports, paths and times."""
    svg = re.sub(r"terminal-\d+", "terminal", svg)
    svg = re.sub(r"127\.0\.0\.1:\d{4,5}", "127.0.0.1:PORT", svg)
    svg = re.sub(r"127\.0\.0\.1&#160;\d{4,5}", "127.0.0.1 PORT", svg)
    return svg


def check_snapshot(app: MaillabApp, name: str, drawn: str | None = None) -> None:
    """Compare an SVG screenshot with tests/snapshots/NAME.svg (MAILLAB_UPDATE_SNAPSHOTS=1 rewrites)."""
    import os

    svg = drawn or normalize_svg(app.export_screenshot(title="maillab"))  # `drawn`: from wait_until_drawn
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("MAILLAB_UPDATE_SNAPSHOTS"):
        path.write_text(svg, encoding="utf-8")
        return
    if not path.exists():  # a missing snapshot is a failure, never silently written
        (SNAPSHOTS / f"{name}.actual.svg").write_text(svg, encoding="utf-8")
        raise AssertionError(f"no snapshot {name} (see tests/snapshots/{name}.actual.svg; MAILLAB_UPDATE_SNAPSHOTS=1 to accept)")
    expected = path.read_text(encoding="utf-8")
    if svg != expected:
        (SNAPSHOTS / f"{name}.actual.svg").write_text(svg, encoding="utf-8")
        raise AssertionError(f"snapshot {name} differs (see tests/snapshots/{name}.actual.svg; MAILLAB_UPDATE_SNAPSHOTS=1 to accept)")
