"""What a lesson is, once parsed: front matter, steps, checks, hints, explanations, solutions.

Plain data, no UI and no network: the parser builds it, the lesson runner and the linter read it,
the TUI renders its prose. Every piece remembers its source line, so a problem is reported as
`file:line: what is wrong`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Expectation:
    """One line of an ```expect block.

    kind: "send" (`> pattern`), "reply" (`< 250`, `< 5xx`, `< +OK`), "fact" (`? tls`),
    "server" (`! mailbox bob@example.com has subject "Hi"`).
    """

    kind: str
    text: str
    line: int


@dataclass(frozen=True)
class CheckGroup:
    """One accepted way of doing a step: the expectations of one ```expect block."""

    expectations: tuple[Expectation, ...]
    line: int

    @property
    def sends(self) -> tuple[Expectation, ...]:
        return tuple(e for e in self.expectations if e.kind == "send")


@dataclass(frozen=True)
class Explanation:
    """`::: explain 503` / `::: explain 5xx` / `::: explain diagnostic:unknown-verb`."""

    key: str
    text: str
    line: int


@dataclass(frozen=True)
class Step:
    """One idea, one thing to do, and how the runner knows it was done."""

    id: str
    title: str
    prose: str  # Markdown without containers or check blocks (safe for Textual's Markdown widget)
    checks: tuple[CheckGroup, ...]
    hints: tuple[str, ...]
    explanations: tuple[Explanation, ...]
    solution: tuple[str, ...]
    line: int
    options: frozenset[str] = frozenset()  # "strict": refuse to send lines with error diagnostics
    solution_line: int | None = None

    def explanation_for(self, code: str | None, diagnostic: str | None = None) -> str | None:
        """The instructor's word for this reply code (exact, then `5xx`/`55x` wildcards) or diagnostic."""
        if diagnostic:
            for explanation in self.explanations:
                if explanation.key == f"diagnostic:{diagnostic}":
                    return explanation.text
        if not code:
            return None
        for pattern in (code, code[:2] + "x", code[:1] + "xx"):
            for explanation in self.explanations:
                if explanation.key.lower() == pattern.lower():
                    return explanation.text
        return None


@dataclass(frozen=True)
class Lesson:
    """A parsed lesson file (one language)."""

    id: str
    title: str
    summary: str
    protocol: str  # "smtp", "pop3" or "both"
    profile: str
    profile_overrides: dict[str, Any]
    accounts: tuple[str, ...]  # "ADDRESS:SECRET"
    mail: tuple[dict[str, Any], ...]
    variables: dict[str, str]
    prerequisites: tuple[str, ...]
    minutes: int
    tags: tuple[str, ...]
    language: str
    intro: str
    steps: tuple[Step, ...]
    path: Path
    front_matter_lines: dict[str, int] = field(default_factory=dict)
    #: A lesson in a world (docs/world.md): `world` names it ("default" or a file), the SMTP
    #: session talks to `smtp_domain`'s submission port and POP3 to `pop3_domain`'s.
    world: str = ""
    smtp_domain: str = ""
    pop3_domain: str = ""

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def steps_hash(self) -> str:
        """Changes when steps or their checks change, so stale progress is not trusted."""
        shape = [[s.id, [[(e.kind, e.text) for e in g.expectations] for g in s.checks]] for s in self.steps]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    def line_of(self, key: str) -> int:
        return self.front_matter_lines.get(key, 1)
