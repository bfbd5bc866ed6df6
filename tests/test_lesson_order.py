"""Teaching order: no lesson uses a protocol or command before the course taught it (course/order.py)."""

from __future__ import annotations

import dataclasses

from simulator.course.catalog import Catalog, Track, load_catalog
from simulator.course.order import check_order, lesson_uses


def test_the_bundled_course_teaches_before_it_uses():
    problems = check_order(load_catalog())
    assert problems == [], "\n".join(f"{p.file}:{p.line}: {p.message}" for p in problems)


def test_pop3_comes_before_the_lessons_that_fetch_mail():
    catalog = load_catalog()
    order = [lesson_id for _track, ids in catalog.ordered() for lesson_id in ids]
    first_pop3_lesson = order.index("pop3-login-retr")
    for lesson_id in order[:first_pop3_lesson]:
        uses = {(use.protocol, use.command) for use in lesson_uses(catalog.get(lesson_id, "en"))}
        assert not {command for protocol, command in uses if protocol == "pop3" and command not in (None, "QUIT")}, lesson_id


def test_a_lesson_moved_before_its_teacher_is_reported_with_file_and_line():
    catalog = load_catalog()
    early = Track("early", {"en": "Early", "zh": "早"}, ["smtp-send-mail", "envelope-vs-headers"])
    reordered = Catalog(lessons=catalog.lessons, tracks=[early, *catalog.tracks])
    problems = check_order(reordered)
    about = [p for p in problems if "envelope-vs-headers" in p.message]
    assert {p.message.split(" uses ")[1].split(" before")[0] for p in about} >= {"POP3 USER", "POP3 PASS", "POP3 RETR"}
    english = next(p for p in about if p.file.endswith("envelope-vs-headers.md"))
    assert english.line and english.severity == "error"


def test_naming_a_command_in_tags_introduces_it():
    catalog = load_catalog()
    lesson = catalog.get("envelope-vs-headers", "en")
    tagged = dataclasses.replace(lesson, tags=(*lesson.tags, "user", "pass", "retr", "quit"))
    lessons = {**catalog.lessons, "envelope-vs-headers": {"en": tagged}}
    early = Track("early", {"en": "Early", "zh": "早"}, ["smtp-send-mail", "envelope-vs-headers"])
    reordered = Catalog(lessons=lessons, tracks=[early, *catalog.tracks])
    assert not [p for p in check_order(reordered) if "envelope-vs-headers" in p.message]
