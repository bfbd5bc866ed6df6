"""One Chinese voice: every Chinese text uses the glossary's term, never a variant it lists.

`simulator/knowledge/glossary.toml` names one Chinese term per concept and the variants that must
not appear. The scan covers every file a Chinese learner reads: the Chinese lessons and lesson
README, every knowledge file (explanations, diagnostics, the app's strings in ui.toml), the course
titles, bundled personas and the app's Python sources.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GLOSSARY = REPO / "simulator" / "knowledge" / "glossary.toml"


def terms() -> list[dict]:
    return tomllib.loads(GLOSSARY.read_text(encoding="utf-8"))["terms"]


def scanned_files() -> list[Path]:
    files = list((REPO / "lessons").rglob("*.zh.md")) + [REPO / "lessons" / "README.zh.md", REPO / "lessons" / "course.toml"]
    files += [p for p in (REPO / "simulator" / "knowledge").glob("*.toml") if p != GLOSSARY]
    files += list((REPO / "mockservers" / "personas").glob("*.toml"))
    files += list((REPO / "simulator").rglob("*.py")) + list((REPO / "docs").glob("*.md"))
    return sorted(set(files))


def test_glossary_is_well_formed():
    seen: dict[str, str] = {}
    for term in terms():
        assert term["en"] and term["zh"] and term["note"], term
        for word in [term["zh"], *term["variants"]]:
            assert word not in seen, f"{word} belongs to both {seen.get(word)!r} and {term['en']!r}"
            seen[word] = term["en"]
        for variant in term["variants"]:
            assert variant not in term["zh"], f"variant {variant} is part of the term {term['zh']}"


@pytest.mark.parametrize("term", terms(), ids=lambda term: term["en"])
def test_no_variant_outside_the_glossary(term):
    found = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            for variant in term["variants"]:
                if variant in line:
                    found.append(f"{path.relative_to(REPO)}:{number}: {variant} (use {term['zh']})")
    assert not found, "\n".join(found)


def test_every_term_is_in_use():
    corpus = "\n".join(path.read_text(encoding="utf-8") for path in scanned_files())
    for term in terms():
        for word in term["zh"].split(" / "):
            assert word in corpus, f"glossary term {word} ({term['en']}) appears nowhere"
