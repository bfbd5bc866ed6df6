"""Lists of protocol verbs live once, in the protocol core (`mailprotocol`).

The test reads every module outside the core with `ast` and fails on a literal that lists three
or more SMTP or POP3 verbs (a set, list or tuple of them, or a string of them separated by
spaces): such a list is a second copy of the verb table that would drift from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from mailprotocol import pop3, smtp

ROOT = Path(__file__).resolve().parent.parent
VERBS = smtp.VERB_NAMES | pop3.VERB_NAMES
SCANNED = ("mockservers", "simulator", "lessons")


def _verb_words(node: ast.AST) -> list[str] | None:
    """The verbs a literal lists, or None when it is not a list made of verbs only."""
    if isinstance(node, (ast.Set, ast.List, ast.Tuple)):
        words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if len(words) != len(node.elts):
            return None
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        words = node.value.replace(",", " ").split()
    else:
        return None
    if len(words) >= 3 and all(word in VERBS for word in words):
        return words
    return None


def verb_lists(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        words = _verb_words(node)
        if words is not None:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {' '.join(words)}")
    return found


def test_no_verb_list_outside_the_protocol_core() -> None:
    found = [hit for package in SCANNED for path in sorted((ROOT / package).rglob("*.py")) for hit in verb_lists(path)]
    assert found == [], "verb lists outside mailprotocol/ (use its verb tables):\n" + "\n".join(found)


def test_the_scan_finds_a_list(tmp_path: Path) -> None:
    sample = ROOT / "mockservers" / "__init__.py"
    assert verb_lists(sample) == []
    tree = ast.parse('A = {"USER", "PASS", "APOP"}\nB = "HELO EHLO MAIL"\nC = ("MAIL", "x", "RCPT")\n')
    assert [_verb_words(node) for node in ast.walk(tree) if _verb_words(node)] == [["USER", "PASS", "APOP"], ["HELO", "EHLO", "MAIL"]]


def test_the_learners_command_reference_agrees_with_the_core() -> None:
    """knowledge/pop3_commands.toml repeats each verb's states, CAPA tag and multi-line rule for
    learners; they must say what the core's verb table decides with."""
    from simulator.engine import knowledge

    for verb in pop3.VERBS:
        entry = knowledge.pop3_command(verb.name)
        assert entry is not None, verb.name
        assert set(entry.get("states", ())) == set(verb.states), verb.name
        assert entry.get("capability", "") == verb.capability, verb.name
        assert entry.get("multiline", "never") == verb.multiline, verb.name
    for verb in smtp.VERBS:
        assert knowledge.smtp_command(verb.name) is not None, verb.name
