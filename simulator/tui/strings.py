"""UI strings in English and Simplified Chinese (data in knowledge/ui.toml)."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Any

UI_FILE = Path(__file__).resolve().parents[1] / "knowledge" / "ui.toml"


@functools.lru_cache(maxsize=1)
def strings() -> dict[str, dict[str, str]]:
    return tomllib.loads(UI_FILE.read_text(encoding="utf-8"))


def t(key: str, lang: str, **values: Any) -> str:
    """The string `key` in `lang` (English when missing), with {placeholders} filled."""
    entry = strings()[key]
    text = entry.get(lang) or entry["en"]
    return text.format(**values) if values else text
