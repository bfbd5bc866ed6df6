"""Every UI string exists in English and Chinese, and what the app shows in Chinese is Chinese."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator.tui.strings import strings

ROOT = Path(__file__).resolve().parents[1]
#: Strings that read the same in both languages: symbols, protocol words, the language switch.
SAME_IN_BOTH = {"key_language", "diag_error", "diag_info", "diag_warning", "tools_base64", "tools_plain",
                "tools_cram", "tools_apop", "key_switch_protocol"}


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)", text))


@pytest.mark.parametrize("key", sorted(strings()))
def test_every_string_has_both_languages(key: str) -> None:
    entry = strings()[key]
    assert entry.get("en", "").strip() and entry.get("zh", "").strip(), key
    assert placeholders(entry["en"]) == placeholders(entry["zh"]), key
    if key not in SAME_IN_BOTH:
        assert entry["zh"] != entry["en"], f"{key}: the Chinese text is the English one"
        assert re.search(r"[\u4e00-\u9fff]", entry["zh"]), f"{key}: no Chinese in {entry['zh']!r}"


def test_every_string_the_code_asks_for_exists() -> None:
    used: dict[str, str] = {}
    for path in (ROOT / "simulator").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for key in re.findall(r'\bt\(\s*"([a-z0-9_]+)"', text) + re.findall(r'\bKey\(\s*"[^"]+",\s*"[^"]+",\s*"([a-z0-9_]+)"', text):
            used[key] = str(path.relative_to(ROOT))
    missing = {key: where for key, where in used.items() if key not in strings()}
    assert not missing, missing
    assert len(used) > 50  # the scan really found the calls


async def test_footer_keys_are_chinese_on_every_screen(tmp_path) -> None:
    """Switch with Ctrl+L and read the keys the footer shows on home, a lesson and the sandbox."""
    from simulator.tui.home_screen import HomeScreen
    from simulator.tui.lesson_screen import LessonScreen
    from simulator.tui.sandbox_screen import SandboxScreen
    from tui_helpers import make_app
    from waiting import wait_for

    english = {entry["en"] for key, entry in strings().items() if key not in SAME_IN_BOTH}
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: app.lang == "zh")
        seen = {}
        for screen_type, key in ((HomeScreen, None), (LessonScreen, "enter"), (SandboxScreen, "f5")):
            if key:
                await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, screen_type))
            await pilot.pause(0.2)
            labels = [active.binding.description for active in app.screen.active_bindings.values() if active.binding.show]
            seen[screen_type.__name__] = labels
            assert labels
            for label in labels:
                assert label not in english, (screen_type.__name__, label)
            if key:
                await pilot.press("escape")
                await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))


async def test_the_palette_speaks_chinese(tmp_path) -> None:
    """Ctrl+P in Chinese: the prompt and every command offered are Chinese (no English system commands)."""
    from textual.command import CommandPalette
    from textual.widgets import Input

    from tui_helpers import make_app
    from waiting import wait_for

    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: app.lang == "zh")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        prompt = app.screen.query_one(Input)
        assert prompt.placeholder == strings()["palette_prompt"]["zh"]
        assert app.focused is prompt
        from simulator.tui.app import MaillabCommands

        offered = [text for text, _ in MaillabCommands(app.screen).commands()]
        assert all(re.search(r"[\u4e00-\u9fff]", text) for text in offered), [t for t in offered if not re.search(r"[\u4e00-\u9fff]", t)]
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
