"""The README's key table names every key the app binds: a reader learns the keys there first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulator.tui.app import APP_KEYS
from simulator.tui.console_screen import CONSOLE_KEYS
from simulator.tui.home_screen import HOME_KEYS
from simulator.tui.inspector_screen import INSPECTOR_KEYS
from simulator.tui.keys import Key
from simulator.tui.lesson_screen import LESSON_KEYS
from simulator.tui.sandbox_screen import SANDBOX_KEYS

README = Path(__file__).resolve().parents[1] / "README.md"
ALL_KEYS: list[Key] = [*APP_KEYS, *CONSOLE_KEYS, *HOME_KEYS, *INSPECTOR_KEYS, *LESSON_KEYS, *SANDBOX_KEYS]


def readme_key_cells() -> str:
    """The key column of README's `| key | what it does |` table, joined."""
    text = README.read_text(encoding="utf-8")
    table = text.split("| key | what it does |", 1)[1].split("\n\n", 1)[0]
    cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| ") and not row.startswith("|---")]
    return " ".join(cells) + " " + " ".join(row for row in table.splitlines())


def spelled(key: str) -> str:
    """Textual's key name as README spells it: ctrl+e -> Ctrl+E, f8 -> F8, escape -> Esc."""
    names = {"escape": "Esc"}
    return "+".join(names.get(part, part.capitalize() if len(part) > 1 else part.upper()) for part in key.split("+"))


@pytest.mark.parametrize("key", sorted({key.key for key in ALL_KEYS}))
def test_every_bound_key_is_in_the_readme_table(key):
    cells = readme_key_cells()
    name = spelled(key)
    if len(name) == 1:  # a letter key inside one screen (r in the inspector) is named in its row's text
        assert re.search(rf"\(`{name.lower()}`\)", cells), f"README's key table never names `{name.lower()}`"
        return
    assert re.search(rf"(?<![\w+]){re.escape(name)}(?![\w+])", cells), f"README's key table lacks {name}"
