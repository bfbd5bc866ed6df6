"""The lesson parser: every construct, and every error with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from simulator.course.parser import LessonError, parse_lesson, parse_lesson_text

FULL = textwrap.dedent(
    """\
    ---
    id: full-lesson
    title: Every construct
    summary: A lesson that uses everything
    protocol: smtp
    profile: rfc
    profile_overrides:
      policies:
        greylist_delay: 1
    accounts:
      - learner@school.test:s3cret
    mail:
      - to: learner@school.test
        subject: Welcome
        body: Hello there
    vars:
      city: Chengdu
    prerequisites: []
    minutes: 7
    tags: [smtp, demo]
    ---
    # Every construct

    Intro prose with `code`.

    :::: step greet strict
    ## Say EHLO
    Send EHLO.

    ```expect
    > EHLO {domain}
    < 250
    ? greeted
    ```

    ```expect
    > HELO {domain}
    < 2xx
    ```

    ::: hint
    First hint.
    :::

    ::: hint
    Second hint.
    :::

    ::: explain 500
    Unknown verb.
    :::

    ::: explain 5xx
    Some permanent failure.
    :::

    ::: explain diagnostic:unknown-verb
    Check the spelling.
    :::

    ```solution
    EHLO learner.example
    ```
    ::::

    :::: step send
    Send a mail.

    ```expect
    > MAIL FROM:<$user>
    < 250
    > RCPT TO:<{address}>
    < 250
    > DATA
    < 354
    > .
    < 250 queued
    ! mailbox $user has subject "Hi"
    ```

    ```solution
    MAIL FROM:<$user>
    RCPT TO:<$user>
    DATA
    Subject: Hi

    hello
    .
    ```
    ::::
    """
)


def test_every_construct(tmp_path):
    path = tmp_path / "full.md"
    path.write_text(FULL)
    lesson = parse_lesson(path)
    assert (lesson.id, lesson.title, lesson.protocol, lesson.profile, lesson.minutes) == (
        "full-lesson", "Every construct", "smtp", "rfc", 7
    )
    assert lesson.profile_overrides == {"policies": {"greylist_delay": 1}}
    assert lesson.accounts == ("learner@school.test:s3cret",)
    assert lesson.mail[0]["subject"] == "Welcome"
    assert lesson.variables == {"city": "Chengdu"}
    assert lesson.tags == ("smtp", "demo") and lesson.language == "en"
    assert lesson.intro.startswith("# Every construct") and "Intro prose" in lesson.intro
    greet, send = lesson.steps
    assert greet.id == "greet" and greet.title == "Say EHLO" and greet.options == {"strict"}
    assert greet.prose == "## Say EHLO\nSend EHLO."
    assert ":::" not in greet.prose and "```" not in greet.prose
    assert len(greet.checks) == 2
    assert [(e.kind, e.text, e.line) for e in greet.checks[0].expectations] == [
        ("send", "EHLO {domain}", 31), ("reply", "250", 32), ("fact", "greeted", 33)
    ]
    assert greet.hints == ("First hint.", "Second hint.")
    assert [e.key for e in greet.explanations] == ["500", "5xx", "diagnostic:unknown-verb"]
    assert greet.explanation_for("500") == "Unknown verb."
    assert greet.explanation_for("554") == "Some permanent failure."
    assert greet.explanation_for("250") is None
    assert greet.explanation_for(None, "unknown-verb") == "Check the spelling."
    assert greet.solution == ("EHLO learner.example",)
    assert send.solution[-3:] == ("", "hello", ".")
    assert send.checks[0].expectations[-1].kind == "server"


def test_language_from_file_name(tmp_path):
    path = tmp_path / "full.zh.md"
    path.write_text(FULL.replace("tags: [smtp, demo]", "tags: [smtp]"))
    assert parse_lesson(path).language == "zh"


def test_steps_hash_changes_with_checks_only(tmp_path):
    a = parse_lesson_text(FULL, tmp_path / "a.md")
    b = parse_lesson_text(FULL.replace("Intro prose", "Other prose").replace("First hint.", "Another hint."), tmp_path / "b.md")
    c = parse_lesson_text(FULL.replace("< 2xx", "< 25x"), tmp_path / "c.md")
    assert a.steps_hash == b.steps_hash != c.steps_hash


HEAD = "---\nid: x\ntitle: X\nprotocol: smtp\n---\n"
STEP = ":::: step s\n```expect\n> NOOP\n< 250\n```\n```solution\nNOOP\n```\n::::\n"


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("", None, "lesson file is empty"),
        ("# no front matter\n", 1, "a lesson starts with front matter"),
        ("---\nid: x\ntitle: [unclosed\n---\n" + STEP, 3, "front matter is not valid YAML"),
        ("---\nid: x\ntitle: X\nprotocol: smtp\ncolour: red\n---\n" + STEP, 5, "unknown front matter key 'colour'"),
        ("---\nid: x\ntitle: X\nprotocol: smtp\nminutes: soon\n---\n" + STEP, 5, "minutes must be a int"),
        ("---\nid: x\ntitle: X\nprotocol: imap\n---\n" + STEP, 4, "protocol must be one of smtp, pop3, both"),
        ("---\nid: X Y\ntitle: X\nprotocol: smtp\n---\n" + STEP, 2, "must be lower-case letters"),
        ("---\ntitle: X\nprotocol: smtp\n---\n" + STEP, 1, "front matter needs 'id'"),
        ("---\nid: x\ntitle: X\nprotocol: smtp\naccounts: [nobody]\n---\n" + STEP, 5, 'must be "address:secret"'),
        (HEAD + "# only prose\n", 6, "at least one :::: step"),
        (HEAD + "::: step s\n```expect\n> NOOP\n```\n:::\n", 6, "open a step with four colons"),
        (HEAD + ":::: step\n```expect\n> NOOP\n```\n::::\n", 6, "a step needs an id"),
        (HEAD + ":::: step s loud\n```expect\n> NOOP\n```\n::::\n", 6, "unknown step option(s) loud"),
        (HEAD + ":::: step s\nprose only\n::::\n", 6, "has no ```expect block"),
        (HEAD + ":::: step s\n```expect\n```\n::::\n", 7, "empty ```expect block"),
        (HEAD + ":::: step s\n```expect\n= NOOP\n```\n::::\n", 8, "expect lines start with >, <, ? or !"),
        (HEAD + ":::: step s\n```expect\n< two hundred\n```\n::::\n", 8, "`<` needs a reply code"),
        (HEAD + ":::: step s\n```expect\n? happy\n```\n::::\n", 8, "unknown session fact 'happy'"),
        (HEAD + ":::: step s\n```expect\n! mailbox x is full\n```\n::::\n", 8, "unknown server fact"),
        (HEAD + ":::: step s\n```expect\n> NOOP\n```\n::: hint\n:::\n::::\n", 10, "empty hint"),
        (HEAD + ":::: step s\n```expect\n> NOOP\n```\n::: explain\nx\n:::\n::::\n", 10, "explain needs one key"),
        (HEAD + ":::: step s\n```expect\n> NOOP\n```\n```solution\n```\n::::\n", 10, "empty solution"),
        (HEAD + STEP + STEP, 15, "step id 's' is used twice"),
        (HEAD + "::: hint\nx\n:::\n" + STEP, 6, "::: hint belongs inside a :::: step block"),
        (HEAD + "```expect\n> NOOP\n```\n" + STEP, 6, "```expect belongs inside a :::: step block"),
        (HEAD + "::: note\nx\n:::\n" + STEP, 6, "unknown block ':::'"),
    ],
)
def test_errors_name_their_line(tmp_path, text, line, message):
    path = tmp_path / "bad.md"
    with pytest.raises(LessonError) as caught:
        parse_lesson_text(text, path)
    assert caught.value.line == line, str(caught.value)
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{path}:{line}:" if line else f"{path}:")


def test_unreadable_file(tmp_path):
    with pytest.raises(LessonError, match="cannot read lesson"):
        parse_lesson(tmp_path / "missing.md")
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LessonError, match="not UTF-8"):
        parse_lesson(binary)


def test_bundled_example_lesson_parses():
    root = Path(__file__).resolve().parents[1] / "lessons"
    lessons = [parse_lesson(p) for p in root.rglob("*.md") if p.name not in ("README.md", "README.zh.md")]
    assert lessons and all(lesson.steps for lesson in lessons)
