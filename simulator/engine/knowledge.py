"""Protocol knowledge as data: load the TOML files of `simulator/knowledge/` and look things up.

The explanations live in TOML (English and Simplified Chinese side by side) so an instructor can
correct a sentence without touching code; this module only reads, caches and indexes them.
Every human-readable value is a table `{ en = "...", zh = "..." }`; `localized()` picks a language.
"""

from __future__ import annotations

import functools
import locale
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, cast

Lang = Literal["en", "zh"]
LANGUAGES: tuple[Lang, ...] = ("en", "zh")

#: Where the TOML files live (shipped as package data of `simulator`).
KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"

#: The knowledge files, by stem.
FILES = (
    "smtp_commands",
    "reply_codes",
    "enhanced_codes",
    "capabilities",
    "pop3_commands",
    "pop3_codes",
    "personas",
    "messages",
    "seed",
)

Entry = Mapping[str, Any]


class KnowledgeError(Exception):
    """A knowledge file is missing or malformed (a packaging or editing mistake)."""


# --- loading ---------------------------------------------------------------------------------


@functools.cache
def load(name: str) -> Mapping[str, Any]:
    """One knowledge file as a dict, parsed once per process."""
    if name not in FILES:
        raise KnowledgeError(f"unknown knowledge file {name!r}; known: {', '.join(FILES)}")
    path = KNOWLEDGE_DIR / f"{name}.toml"
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: missing") from None
    except tomllib.TOMLDecodeError as error:
        raise KnowledgeError(f"{path}: {error}") from None


def clear_cache() -> None:
    """Forget parsed files (tests that edit knowledge, or a TUI reload)."""
    load.cache_clear()
    _compiled_notes.cache_clear()


# --- language --------------------------------------------------------------------------------


def normalize_language(value: str | None) -> Lang | None:
    """Map `zh`, `zh_CN.UTF-8`, `zh-Hans`, `en_US` ... to a supported language, else None."""
    if not value:
        return None
    tag = value.strip().lower().replace("-", "_")
    if tag in ("c", "posix"):
        return None
    if tag.startswith("zh"):
        return "zh"
    if tag.startswith("en"):
        return "en"
    return None


def resolve_language(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Lang:
    """The language to explain in: the explicit choice, then MAILLAB_LANG, then the locale.

    The locale is read from LC_ALL, LC_MESSAGES and LANG (POSIX precedence); any `zh_*` gives
    Chinese. Anything unknown falls back to English, so a typo never breaks the app.
    """
    env = os.environ if environ is None else environ
    for candidate in (explicit, env.get("MAILLAB_LANG")):
        chosen = normalize_language(candidate)
        if chosen:
            return chosen
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(variable)
        if value:
            # POSIX: the first non-empty of these decides, even if it is not a language we know.
            return normalize_language(value) or "en"
    if environ is None:
        try:
            current = locale.getlocale(locale.LC_MESSAGES)[0]  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            current = None
        return normalize_language(current) or "en"
    return "en"


def localized(value: Any, lang: Lang) -> str:
    """Pick one language from a `{en, zh}` table; plain strings pass through.

    Falls back to the other language rather than failing: a half-translated entry still shows.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        text = value.get(lang) or value.get("en") or value.get("zh")
        if isinstance(text, str):
            return text
    return ""


def message(key: str, lang: Lang, **values: Any) -> str:
    """An engine sentence from messages.toml (`section.name`), formatted with `values`."""
    section, _, name = key.partition(".")
    table = load("messages").get(section, {})
    entry = table.get(name)
    if entry is None:
        raise KnowledgeError(f"messages.toml has no {key!r}")
    text = localized(entry, lang)
    return text.format(**values) if values else text


# --- SMTP ------------------------------------------------------------------------------------

#: Spellings a learner may use for a verb; MAIL FROM and RCPT TO are the verbs MAIL and RCPT.
_VERB_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*)")


def command_verb(line: str | None) -> str | None:
    """The upper-case verb of a command line (`mail from: <a>` -> `MAIL`), or None."""
    if not line:
        return None
    match = _VERB_RE.match(line)
    return match.group(1).upper() if match else None


def smtp_command(verb: str) -> Entry | None:
    """The entry of an SMTP command (`MAIL`, `mail from`, `RCPT TO:<x>` all find theirs)."""
    key = command_verb(verb)
    return load("smtp_commands")["commands"].get(key) if key else None


def smtp_commands() -> Mapping[str, Entry]:
    return load("smtp_commands")["commands"]


def smtp_extension(name: str) -> Entry | None:
    """A verb-less service extension (SIZE, PIPELINING, CHUNKING, DSN ...)."""
    return load("smtp_commands")["extensions"].get(name.upper())


def smtp_event(name: str) -> Entry | None:
    """`connect` (the greeting) or `end_of_data` (the reply to the final dot)."""
    return load("smtp_commands")["events"].get(name)


def reply_code(code: str | int, after: str | None = None) -> Entry | None:
    """An SMTP reply code; with `after` (a verb) the command-specific meaning wins (ETRN 251)."""
    entry = load("reply_codes")["codes"].get(str(code))
    if entry is None:
        return None
    verb = command_verb(after)
    specific = entry.get("by_command", {}).get(verb) if verb else None
    if specific:
        merged = dict(entry)
        merged.update(specific)
        return merged
    return entry


def reply_codes() -> Mapping[str, Entry]:
    return load("reply_codes")["codes"]


def reply_digit(position: Literal[1, 2], digit: str | int) -> Entry | None:
    """Meaning of the first (2/3/4/5) or second (0..5) digit of a reply code."""
    table = "first_digit" if position == 1 else "second_digit"
    return load("reply_codes")[table].get(str(digit))


def enhanced_class(klass: str | int) -> Entry | None:
    return load("enhanced_codes")["classes"].get(str(klass))


def enhanced_subject(subject: str | int) -> Entry | None:
    return load("enhanced_codes")["subjects"].get(str(int(subject)))


def enhanced_detail(subject: str | int, detail: str | int) -> Entry | None:
    """The registry entry X.subject.detail (leading zeros ignored)."""
    return load("enhanced_codes")["details"].get(f"{int(subject)}.{int(detail)}")


def smtp_capability(keyword: str) -> Entry | None:
    """An EHLO keyword, case-insensitively (`coremail` finds COREMAIL; `AUTH=LOGIN` is its own)."""
    return load("capabilities")["smtp"].get(keyword.upper())


def sasl_mechanism(name: str) -> Entry | None:
    return load("capabilities")["sasl"].get(name.upper())


def pop3_capability(tag: str) -> Entry | None:
    return load("capabilities")["pop3"].get(tag.upper())


def login_prompt(decoded: str) -> Entry | None:
    """The explanation of a decoded AUTH LOGIN prompt (`Username:`, 163's `username:` ...)."""
    prompts = load("capabilities")["login_prompts"]
    return prompts.get(decoded) or prompts.get(decoded.strip())


# --- POP3 ------------------------------------------------------------------------------------


def pop3_command(verb: str) -> Entry | None:
    key = command_verb(verb)
    return load("pop3_commands")["commands"].get(key) if key else None


def pop3_commands() -> Mapping[str, Entry]:
    return load("pop3_commands")["commands"]


def pop3_state(name: str) -> Entry | None:
    return load("pop3_commands")["states"].get(name.upper())


def pop3_event(name: str) -> Entry | None:
    return load("pop3_commands")["events"].get(name)


def pop3_indicator(indicator: str) -> Entry | None:
    """`+OK`, `-ERR` or `+` (continuation)."""
    return load("pop3_codes")["indicators"].get(indicator.upper())


def pop3_response_code(code: str) -> Entry | None:
    """A bracketed response code; hierarchical, so `SYS/FOO` falls back to `SYS`."""
    codes = load("pop3_codes")["response_codes"]
    parts = code.upper().split("/")
    while parts:
        entry = codes.get("/".join(parts))
        if entry is not None:
            return entry
        parts.pop()
    return None


# --- personas --------------------------------------------------------------------------------


def persona(name: str) -> Entry | None:
    return load("personas")["personas"].get(name.lower())


def personas() -> Mapping[str, Entry]:
    return load("personas")["personas"]


@dataclass(frozen=True)
class PersonaNote:
    """One `[[notes]]` entry of personas.toml with its patterns compiled."""

    id: str
    personas: tuple[str, ...]
    protocol: str
    note: Mapping[str, str]
    text: re.Pattern[str] | None = None
    code: str | None = None
    after: str | None = None
    sent: re.Pattern[str] | None = None

    def matches(
        self,
        *,
        protocol: str,
        code: str | None,
        text: str,
        after: str | None,
        persona: str | None,
    ) -> bool:
        """True when every filter this note has agrees (see personas.toml for the rules)."""
        if self.protocol != protocol:
            return False
        if self.code is not None and self.code != code:
            return False
        if self.after is not None and self.after != command_verb(after):
            return False
        if self.sent is not None and not (after and self.sent.search(after)):
            return False
        if self.text is not None:
            return any(self.text.search(line) for line in text.splitlines() or [""])
        return persona is not None and persona.lower() in self.personas


@functools.cache
def _compiled_notes() -> tuple[PersonaNote, ...]:
    notes = []
    for raw in load("personas").get("notes", []):
        flags = re.IGNORECASE
        notes.append(
            PersonaNote(
                id=raw["id"],
                personas=tuple(p.lower() for p in raw.get("personas", [])),
                protocol=raw.get("protocol", "smtp"),
                note=raw["note"],
                text=re.compile(raw["text"], flags | re.MULTILINE) if "text" in raw else None,
                code=raw.get("code"),
                after=raw.get("after"),
                sent=re.compile(raw["sent"], flags) if "sent" in raw else None,
            )
        )
    return tuple(notes)


def persona_notes(
    *,
    protocol: str,
    code: str | None,
    text: str,
    after: str | None = None,
    persona: str | None = None,
) -> list[PersonaNote]:
    """The notes that apply to a reply: by recognisable text, or by persona and context.

    `text` is the reply's text with codes stripped, one line per reply line.
    """
    return [
        note
        for note in _compiled_notes()
        if note.matches(protocol=protocol, code=code, text=text, after=after, persona=persona)
    ]


# --- seed ------------------------------------------------------------------------------------


def seed() -> Mapping[str, Any]:
    """The seed tutorial's coverage list (commands, extensions, codes it mentions)."""
    return load("seed")


def all_files() -> dict[str, Mapping[str, Any]]:
    """Every knowledge file, loaded (for tests and `maillab lint`)."""
    return {name: load(name) for name in FILES}


def as_lang(value: str) -> Lang:
    """Validate a language code coming from outside (CLI flag, settings file)."""
    chosen = normalize_language(value)
    if chosen is None:
        raise ValueError(f"unsupported language {value!r}; use one of {', '.join(LANGUAGES)}")
    return cast(Lang, chosen)
