"""An explanation speaks about the server the learner is talking to, not about "some servers".

A lesson runs against a known persona and the explainer knows the active one, so a sentence that
hedges over unnamed servers ("some servers", 有些服务器 ...) teaches nothing the learner can check.
Such a phrase may stay only on a line that cites its source (an RFC section, postconf(5), the
sources page or the protocol-facts reference), where the generalisation is backed.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HEDGES = re.compile(
    r"\b(?:some|many|most) servers\b|有些服务器|一些服务器|很多服务器|许多服务器|大多数服务器|多数服务器",
    re.IGNORECASE,
)
SOURCE = re.compile(r"RFC ?\d{3,4}|postconf\(5\)|docs/sources\.md|PROTOCOL-FACTS")


def scanned_files() -> list[Path]:
    """Every lesson (en and zh, READMEs included) and every knowledge file."""
    files = list((REPO / "lessons").rglob("*.md"))
    files += list((REPO / "simulator" / "knowledge").glob("*.toml"))
    return sorted(files)


def hedges_in(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line with a hedge phrase and no cited source."""
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if HEDGES.search(line) and not SOURCE.search(line)
    ]


def test_the_detector_catches_each_phrase_and_lets_a_sourced_line_pass():
    for phrase in ("Some servers answer 502.", "as most servers do", "Many servers never did",
                   "有些服务器关掉了 HELP", "一些服务器", "很多服务器会容忍", "大多数服务器回 252"):
        assert hedges_in(phrase), phrase
    assert not hedges_in("most servers relayed for everyone (RFC 2505 2.1)")
    assert not hedges_in("This server answers 214.")


def test_no_hedge_over_unnamed_servers_in_lessons_or_knowledge():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line}"
        for path in scanned_files()
        for number, line in hedges_in(path.read_text(encoding="utf-8"))
    ]
    assert not found, "say what this persona does, or cite the source:\n" + "\n".join(found)


def test_the_scan_covers_both_languages_and_the_knowledge_files():
    names = {path.name for path in scanned_files()}
    assert {"smtp-hello.md", "smtp-hello.zh.md", "smtp_commands.toml", "personas.toml"} <= names
