"""Diagnostics: what the validator says about a line before it is sent.

A `Diagnostic` has a stable `id` (lessons key their explanations by it), a severity, a message in
the learner's language, the RFC section, an optional corrected line to type instead, and - when
the server will refuse the line - the reply it will send (`code` and `reply`).

The sentences live in `simulator/knowledge/diagnostics.toml` (English and Chinese side by side),
one `[diagnostics.<id>]` table per id, so an instructor can fix a sentence without touching code.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from .knowledge import KNOWLEDGE_DIR, KnowledgeError, Lang, localized

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

#: The knowledge file with the diagnostics' sentences.
DIAGNOSTICS_FILE = KNOWLEDGE_DIR / "diagnostics.toml"


@functools.cache
def load_diagnostics() -> Mapping[str, Any]:
    """diagnostics.toml, parsed once per process."""
    try:
        with DIAGNOSTICS_FILE.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise KnowledgeError(f"{DIAGNOSTICS_FILE}: missing") from None
    except tomllib.TOMLDecodeError as error:
        raise KnowledgeError(f"{DIAGNOSTICS_FILE}: {error}") from None


def diagnostic_entry(diagnostic_id: str) -> Mapping[str, Any]:
    entry = load_diagnostics()["diagnostics"].get(diagnostic_id)
    if entry is None:
        raise KnowledgeError(f"diagnostics.toml has no entry for {diagnostic_id!r}")
    return entry


def diagnostic_ids() -> list[str]:
    return sorted(load_diagnostics()["diagnostics"])


def label(key: str, lang: Lang, **values: Any) -> str:
    """A short label of the text rendering (`[labels]` of diagnostics.toml)."""
    text = localized(load_diagnostics()["labels"][key], lang)
    return text.format(**values) if values else text


def secret_kind(kind: str, lang: Lang) -> str:
    """A persona's name for the login secret ("authorization code"), in the learner's language."""
    entry = load_diagnostics().get("secret_kinds", {}).get(kind)
    return localized(entry, lang) if entry else kind


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a line the learner is about to send."""

    id: str
    severity: Severity
    message: str
    rfc: str | None = None
    suggestion: str | None = None  # a corrected line to type instead (protocol text, not translated)
    code: str | None = None  # the reply code the server will answer: "503", or "-ERR" for POP3
    reply: tuple[str, ...] = ()  # that reply as this server renders it
    lang: Lang = "en"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reply"] = list(self.reply)
        return data

    def render_text(self) -> str:
        """A few plain-text lines for a terminal."""
        colon = "：" if self.lang == "zh" else ": "
        head = f"{label(self.severity, self.lang)} [{self.id}] {self.message}"
        out = [head]
        if self.rfc:
            out.append(f"    {label('rfc', self.lang)}{colon}{self.rfc}")
        if self.suggestion is not None:
            shown = self.suggestion if self.suggestion != "" else label("empty_line", self.lang)
            out.append(f"    {label('suggestion', self.lang)}{colon}{shown}")
        if self.reply:
            out.append(f"    {label('server_will_answer', self.lang)}{colon}{self.reply[0]}")
            out += [f"        {line}" for line in self.reply[1:]]
        elif self.code:
            out.append(f"    {label('server_will_answer', self.lang)}{colon}{self.code}")
        return "\n".join(out)


def make(
    diagnostic_id: str,
    severity: Severity,
    lang: Lang,
    *,
    suggestion: str | None = None,
    code: str | None = None,
    reply: tuple[str, ...] | list[str] = (),
    **values: Any,
) -> Diagnostic:
    """Build a diagnostic from its diagnostics.toml entry, filling the sentence's placeholders."""
    entry = diagnostic_entry(diagnostic_id)
    text = localized(entry["message"], lang)
    if values:
        text = text.format(**{k: _shown(v) for k, v in values.items()})
    return Diagnostic(
        id=diagnostic_id,
        severity=severity,
        message=text,
        rfc=entry.get("rfc") or None,
        suggestion=suggestion,
        code=code,
        reply=tuple(reply),
        lang=lang,
    )


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(str(v) for v in value)
    return str(value)
