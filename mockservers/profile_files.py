"""Profile files: find a persona by name or path, read its TOML and every file it `extends`.

`file:line` positions come from here (`locate`), so lint and loading report problems the same way.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PERSONA_DIR = Path(__file__).with_name("personas")


class ProfileError(Exception):
    """A profile that cannot be used; `str()` is `file:line: what is wrong`."""

    def __init__(self, source: Path | str, line: int | None, message: str) -> None:
        self.source = str(source)
        self.line = line
        self.message = message
        where = f"{self.source}:{line}" if line else self.source
        super().__init__(f"{where}: {message}")


def bundled_personas() -> list[str]:
    """Names of the personas shipped with maillab."""
    return sorted(p.stem for p in PERSONA_DIR.glob("*.toml"))


def resolve_profile_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A bundled persona name, or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path or "\\" in name_or_path:
        if not candidate.is_absolute() and relative_to is not None:
            candidate = relative_to / candidate
        return candidate
    bundled = PERSONA_DIR / f"{name_or_path}.toml"
    if bundled.exists():
        return bundled
    raise ProfileError(
        name_or_path, None, f"no persona named {name_or_path!r} (known: {', '.join(bundled_personas())})"
    )


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"))*)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"') for part in re.findall(r'"[^"]*"|[^.]+', text))


def locate(text: str, path: tuple[Any, ...]) -> int | None:
    """Line number of a key in TOML source, for `file:line` messages.

    `path` may hold an int after an array-of-tables name: ("faults", 2, "reply") is the `reply` of
    the third `[[faults]]`. Falls back to the nearest enclosing table or key.
    """
    section: tuple[Any, ...] = ()
    counters: dict[tuple[Any, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = counters.get(name, -1) + 1
                counters[name] = index
                section = name + (index,)
            else:
                section = name
            candidate = section
        else:
            key = _KEY.match(line)
            if not key:
                continue
            candidate = section + _split_key(key.group(1))
        length = 0
        while length < min(len(candidate), len(path)) and candidate[length] == path[length]:
            length += 1
        if length == len(candidate) == len(path):
            return number
        if length == len(candidate) and (best is None or length > best[0]):
            best = (length, number)
    return best[1] if best else None


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(path, None, "no such profile file") from None
    except OSError as error:
        raise ProfileError(path, None, f"cannot read profile: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ProfileError(path, None, "profile is not UTF-8 text") from None
    if not text.strip():
        raise ProfileError(path, None, "profile file is empty")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        line, message = toml_error_position(error)
        raise ProfileError(path, line, f"TOML syntax error: {message}") from None


def toml_error_position(error: tomllib.TOMLDecodeError) -> tuple[int | None, str]:
    """(line, message) of a TOML syntax error; Python before 3.14 has the line only in the text."""
    line = getattr(error, "lineno", None)
    message = getattr(error, "msg", str(error))
    if line is None:
        m = re.search(r"line (\d+)", str(error))
        line = int(m.group(1)) if m else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
    return line, message


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (lists included) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


@dataclass
class ProfileSources:
    """The files of an `extends` chain, child first, with their parsed tables and text."""

    chain: list[tuple[Path, dict[str, Any], str]]

    @property
    def path(self) -> Path:
        return self.chain[0][0]

    def merged(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        for _, data, _ in reversed(self.chain):
            raw = _merge(raw, {k: v for k, v in data.items() if k != "extends"})
        return raw

    def where(self, path: tuple[Any, ...]) -> tuple[Path, int | None]:
        """The file (child first) that defines `path`, and its line."""
        for file, data, text in self.chain:
            if _has(data, path):
                return file, locate(text, path)
        file, _, text = self.chain[0]
        return file, locate(text, path)


def _has(data: Any, path: tuple[Any, ...]) -> bool:
    for part in path:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return False
            data = data[part]
        elif isinstance(data, Mapping) and part in data:
            data = data[part]
        else:
            return False
    return True


def load_sources(path: Path) -> ProfileSources:
    """Read a profile and every file it extends (cycles and bad `extends` are errors)."""
    chain: list[tuple[Path, dict[str, Any], str]] = []
    seen: list[Path] = []
    current = path
    while True:
        current = current.resolve()
        if current in seen:
            raise ProfileError(seen[0], None, "profile extends itself: " + " -> ".join(p.name for p in seen + [current]))
        seen.append(current)
        data, text = _read_toml(current)
        chain.append((current, data, text))
        parent = data.get("extends")
        if parent is None:
            return ProfileSources(chain)
        if not isinstance(parent, str):
            raise ProfileError(current, locate(text, ("extends",)), "extends must be a persona name or a path")
        try:
            current = resolve_profile_path(parent, relative_to=current.parent)
        except ProfileError as error:
            raise ProfileError(current, locate(text, ("extends",)), error.message) from None
