"""Sample messages in the Chinese lessons are Chinese, and sent the way the lesson's persona wants.

A Chinese learner writes a Chinese subject (an RFC 2047 encoded-word, computed by `{mime:...}`) and a
Chinese body. 8-bit body text is declared with `BODY=8BITMIME` (RFC 6152 3) unless the lesson's
persona takes undeclared 8-bit text as it is; the textbook persona would otherwise answer with a
note the lesson does not show. The 8BITMIME lesson sends undeclared text on purpose.
"""

from __future__ import annotations

import pytest

from simulator.course.catalog import load_catalog
from simulator.course.patterns import render_solution
from simulator.course.setup import lesson_profile, lesson_variables

# English subjects a Chinese lesson quotes on purpose: the original tutorial's QQ and Sina sessions,
# replayed word for word, and the message swaks composes by itself (`Subject: test`).
QUOTED_SUBJECTS = {"this is a test telnet smtp mail", "hi smtp mail", "test"}
# Lessons whose point is undeclared 8-bit text.
UNDECLARED_ON_PURPOSE = {"smtputf8-8bitmime"}


def chinese_lessons():
    catalog = load_catalog()
    for lesson_id, versions in sorted(catalog.lessons.items()):
        if "zh" in versions:
            yield pytest.param(versions["zh"], id=lesson_id)


def sent_messages(lesson, variables):
    """(MAIL FROM line, header lines, body lines) of every message a solution sends after DATA."""
    mail_from, in_data, in_body, header, body = "", False, False, [], []
    for step in lesson.steps:
        for raw in step.solution:
            line = render_solution(raw, variables)
            upper = line.strip().upper()
            if not in_data:
                if upper.startswith("MAIL FROM"):
                    mail_from = line
                elif upper == "DATA":
                    in_data, in_body, header, body = True, False, [], []
                continue
            if line == ".":
                yield mail_from, header, body
                in_data = False
            elif not in_body and line == "":
                in_body = True
            else:
                (body if in_body else header).append(line)


def _variables(lesson):
    if not lesson.profile:
        return None, {}
    profile = lesson_profile(lesson)
    return profile, lesson_variables(lesson, profile)


@pytest.mark.parametrize("lesson", list(chinese_lessons()))
def test_chinese_8bit_body_is_declared_where_the_persona_wants_it(lesson):
    profile, variables = _variables(lesson)
    if profile is None or lesson.id in UNDECLARED_ON_PURPOSE or profile.policies.undeclared_8bit == "accept":
        return
    for mail_from, _header, body in sent_messages(lesson, variables):
        if all(line.isascii() for line in body):
            continue
        params = mail_from.upper().split(">", 1)[-1]
        assert "BODY=8BITMIME" in params or "SMTPUTF8" in params, (
            f"{lesson.path.name}: a Chinese body after {mail_from!r}: the {lesson.profile} persona wants BODY=8BITMIME"
        )


@pytest.mark.parametrize("lesson", list(chinese_lessons()))
def test_chinese_subjects_are_computed_encoded_words(lesson):
    """A subject in a Chinese lesson's solution is an encoded-word, never raw UTF-8 in the header (without SMTPUTF8)."""
    _profile, variables = _variables(lesson)
    for mail_from, header, _body in sent_messages(lesson, variables):
        if "SMTPUTF8" in mail_from.upper().split(">", 1)[-1]:
            continue  # RFC 6532 3.2: UTF-8 header fields once SMTPUTF8 is declared
        for line in header:
            if line.lower().startswith("subject:"):
                assert line.isascii(), f"{lesson.path.name}: {line!r} is raw 8-bit text in a header (RFC 2047 2)"


@pytest.mark.parametrize("lesson", list(chinese_lessons()))
def test_chinese_sample_subjects_are_chinese(lesson):
    """A Chinese learner writes a Chinese subject; English only where the lesson quotes a session."""
    _profile, variables = _variables(lesson)
    for _mail_from, header, _body in sent_messages(lesson, variables):
        for line in header:
            if line.lower().startswith("subject:"):
                value = line.split(":", 1)[1].strip()
                if value.lower() in QUOTED_SUBJECTS:
                    continue
                assert not (value.isascii() and "=?" not in value and any(c.isalpha() for c in value)), (
                    f"{lesson.path.name}: {line!r} is an English subject in a Chinese lesson"
                )
