"""The annotated example in the lesson README is the greylisting lesson itself, in each language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


@pytest.mark.parametrize("readme, lesson", [("README.md", "greylisting.md"), ("README.zh.md", "greylisting.zh.md")])
def test_readme_example_is_the_greylisting_lesson(readme, lesson):
    text = (LESSONS / readme).read_text(encoding="utf-8")
    example = re.search(r"````markdown\n(.*?)\n````\n", text, re.S)
    assert example, f"{readme} has no ````markdown example"
    assert example.group(1).strip() == (LESSONS / "failures" / lesson).read_text(encoding="utf-8").strip()
