"""The lesson engine (completion, several accepted ways, hints, facts), patterns, lint with
solution replay over real sockets, and saved progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailprotocol import codec as sasl
from simulator.course.lint import lint_lessons
from simulator.course.parser import parse_lesson_text
from simulator.course.patterns import PatternError, RuntimeValues, compile_pattern, render_solution
from simulator.course.progress import Progress
from simulator.course.replay import replay_sync
from simulator.course.runner import LessonRun, StoreFacts, reply_matches
from simulator.course.setup import lesson_profile, lesson_variables
from simulator.engine.replies import parse_smtp_reply

LESSON = textwrap.dedent(
    """\
    ---
    id: engine-demo
    title: Engine demo
    protocol: smtp
    profile: rfc
    ---
    # Demo

    :::: step greet
    ```expect
    > EHLO {domain}
    < 250
    ```
    ```expect
    > HELO {domain}
    < 250
    ```
    ::: hint
    one
    :::
    ::: hint
    two
    :::
    ::: explain 500
    Unknown verb: check the spelling.
    :::
    ```solution
    EHLO learner.example
    ```
    ::::

    :::: step login
    ```expect
    > AUTH PLAIN {plain:$user:$secret}
    < 235
    ? authenticated as $user
    ```
    ```expect
    > AUTH LOGIN
    < 334
    > {base64:alice@example.com}
    < 334
    > {base64}
    < 235
    ```
    ```solution
    AUTH PLAIN {plain:$user:$secret}
    ```
    ::::

    :::: step send
    ```expect
    > MAIL FROM:<$user>
    < 250
    > RCPT TO:<$to>
    < 250
    ? recipients 1
    ```
    ```solution
    MAIL FROM:<$user>
    RCPT TO:<$to>
    ```
    ::::

    :::: step data
    ```expect
    > DATA
    < 354
    > .
    < 250
    ! mailbox $to has subject "engine test"
    ```
    ```solution
    DATA
    Subject: engine test

    ..a dot line
    .
    ```
    ::::

    :::: step provoke
    ```expect
    < 5xx
    ```
    ```solution
    FROB
    ```
    ::::
    """
)


def lesson(tmp_path, text=LESSON, name="demo.md"):
    path = tmp_path / name
    path.write_text(text)
    return parse_lesson_text(text, path)


def run_for(tmp_path):
    parsed = lesson(tmp_path)
    profile = lesson_profile(parsed)
    return LessonRun(parsed, lesson_variables(parsed, profile))


def test_variables_come_from_the_profile_accounts(tmp_path):
    parsed = lesson(tmp_path)
    variables = lesson_variables(parsed, lesson_profile(parsed))
    assert variables["user"] == "alice@example.com" and variables["secret"] == "alice-secret"
    assert variables["to"] == "bob@example.com" and variables["domain"] == "example.com"


def test_steps_complete_in_order_with_either_accepted_way(tmp_path):
    run = run_for(tmp_path)
    run.received(["220 mail.example.com ESMTP Postfix"])
    assert run.current.step.id == "greet"
    run.sent("HELO learner.example")
    assert run.current.step.id == "greet"  # no reply yet
    run.received(["250 mail.example.com"])
    assert run.current.step.id == "login"
    run.sent("AUTH LOGIN")
    run.received(["334 VXNlcm5hbWU6"])
    run.sent(sasl.b64encode_text("alice@example.com"))
    run.received(["334 UGFzc3dvcmQ6"])
    run.sent(sasl.b64encode_text("alice-secret"))
    run.received(["235 2.7.0 Authentication successful"])
    assert run.completed_steps() == ["greet", "login"]
    assert all("alice-secret" not in json.dumps(e) for e in run.record)


def test_a_failed_reply_does_not_complete_and_hints_escalate(tmp_path):
    run = run_for(tmp_path)
    run.received(["220 mail.example.com ESMTP Postfix"])
    run.sent("EHOL x")
    run.received(["500 5.5.2 Error: command not recognized"])
    assert run.visible_hints() == []
    assert run.explanation("500") == "Unknown verb: check the spelling."
    run.sent("EHLO")
    run.received(["501 5.5.4 Syntax: EHLO hostname"])
    assert run.visible_hints() == ["one"]  # automatic after two failures
    assert run.next_hint() == "two"
    assert run.next_hint() == "two"
    assert run.current.step.id == "greet"
    run.sent("EHLO a.example")
    run.received(["250-mail.example.com", "250 PIPELINING"])
    assert run.current.step.id == "login"
    attempt = run.attempt()
    assert attempt["failures"]["greet"] == 2 and attempt["completed"] == ["greet"]
    assert [e["event"] for e in attempt["events"]].count("hint") == 3


def test_facts_must_hold(tmp_path):
    run = run_for(tmp_path)
    run.received(["220 x"])
    run.sent("EHLO a.example")
    run.received(["250 x"])
    run.sent("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
    run.received(["235 ok"])
    run.sent("MAIL FROM:<alice@example.com>")
    run.received(["250 ok"])
    run.sent("RCPT TO:<bob@example.com>")
    run.received(["550 no"])  # the RCPT failed: recipients 0
    assert run.current.step.id == "send"
    run.sent("RCPT TO:<bob@example.com>")
    run.received(["250 ok"])
    assert run.current.step.id == "data"


def test_server_facts_need_a_view_of_the_server(tmp_path):
    run = run_for(tmp_path)
    assert run.server_fact('mailbox bob@example.com has subject "x"') is False


@pytest.mark.parametrize(
    "expected, reply, ok",
    [
        ("250", ["250 ok"], True),
        ("2xx", ["221 bye"], True),
        ("25x", ["252 maybe"], True),
        ("5xx", ["250 ok"], False),
        ("250 queued", ["250 2.0.0 Ok: queued as X"], True),
        ("250 STARTTLS", ["250-x", "250-STARTTLS", "250 8BITMIME"], True),
        ("250 CHUNKING", ["250-x", "250 8BITMIME"], False),
    ],
)
def test_reply_matching(expected, reply, ok):
    assert reply_matches(expected, parse_smtp_reply(reply)) is ok


@pytest.mark.parametrize(
    "pattern, line, ok",
    [
        ("EHLO {domain}", "ehlo   learner.example", True),
        ("EHLO {domain}", "EHLO [127.0.0.1]", True),
        ("EHLO {domain}", "EHLO bad..name", False),
        ("MAIL FROM:<{address}>", "MAIL FROM:<a@b.example>", True),
        ("MAIL FROM:<{address}>", "MAIL FROM:<nobody>", False),
        ("{base64:Username:}", "VXNlcm5hbWU6", True),
        ("{base64:Username:}", "UGFzc3dvcmQ6", False),
        ("AUTH PLAIN {plain:$user:$secret}", "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "pw"), True),
        ("AUTH PLAIN {plain:$user:$secret}", "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "no"), False),
        ("RETR {number}", "RETR 12", True),
        ("NOOP {any}", "NOOP", False),
        ("NOOP{any}", "NOOP whatever", True),
    ],
)
def test_patterns(pattern, line, ok):
    assert compile_pattern(pattern, {"user": "alice@example.com", "secret": "pw"}).matches(line) is ok


def test_pattern_errors():
    with pytest.raises(PatternError, match=r"unknown variable \$nobody"):
        compile_pattern("MAIL FROM:<$nobody>", {"user": "a"})
    with pytest.raises(PatternError, match="unknown placeholder"):
        compile_pattern("EHLO {host}", {})


def test_solution_rendering():
    variables = {"user": "tim@example.com", "secret": "tanstaaftanstaaf"}
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert render_solution("{cram:tim:tanstaaftanstaaf}", variables, RuntimeValues(last_challenge=challenge)) == (
        "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    )
    assert render_solution("{apop:tanstaaf}", variables, RuntimeValues(apop_timestamp="<1896.697170952@dbc.mtview.ca.us>")) == (
        "c4c9334bac560ecc979e58001b3e22fb"
    )
    assert render_solution("{base64:$user}", variables) == sasl.b64encode_text("tim@example.com")


# --- replay and lint over real sockets ---------------------------------------------------------


def test_replay_completes_every_step_and_checks_the_mailbox(tmp_path):
    result = replay_sync(lesson(tmp_path))
    assert result.ok, result.message
    assert result.completed == ("greet", "login", "send", "data", "provoke")


def test_replay_reports_the_first_step_that_fails(tmp_path):
    broken = LESSON.replace("RCPT TO:<$to>\n```\n::::", "RCPT TO:<nobody@example.com>\n```\n::::")
    result = replay_sync(lesson(tmp_path, broken))
    assert not result.ok
    assert result.failed_step.id == "send"
    assert "the solution never sends a line matching `> RCPT TO:<$to>`" in result.message


def test_replay_with_starttls_and_pop3(tmp_path):
    text = textwrap.dedent(
        """\
        ---
        id: tls-then-pop
        title: TLS then POP3
        protocol: both
        profile: rfc
        mail:
          - to: bob@example.com
            subject: waiting
            body: hello bob
        ---
        :::: step tls
        ```expect
        > STARTTLS
        < 220
        > EHLO {domain}
        < 250
        ? tls
        ```
        ```solution
        EHLO a.example
        STARTTLS
        EHLO a.example
        ```
        ::::
        :::: step pop
        ```expect
        > RETR 1
        < +OK
        ? retrieved 1
        ```
        ```solution
        @connect pop3
        APOP bob@example.com {apop:bob-secret}
        RETR 1
        ```
        ::::
        """
    )
    result = replay_sync(lesson(tmp_path, text))
    assert result.ok, result.message


def test_replay_hears_what_the_server_says_unasked_during_a_wait(tmp_path):
    """The 421 after the last 500 answers no command: a learner sees it arrive, so must the replay.

    Without listening during `@wait`, the step could only end by typing into a closed connection.
    """
    text = textwrap.dedent(
        """\
        ---
        id: hangup
        title: The server hangs up
        protocol: smtp
        profile: rfc
        profile_overrides:
          quirks:
            disconnect_after_unknown: 2
        ---
        :::: step errors
        ```expect
        < 421 too many errors
        ? closed
        ```
        ```solution
        EHLO a.example
        HELLO
        HOLA
        @wait 3
        ```
        ::::
        """
    )
    result = replay_sync(lesson(tmp_path, text))
    assert result.ok, result.message
    assert result.completed == ("errors",)


def test_lint_cli_reports_file_line_and_exit_status(tmp_path):
    good = tmp_path / "good.md"
    good.write_text(LESSON)
    bad = tmp_path / "bad.md"
    bad.write_text(LESSON.replace("id: engine-demo", "id: engine-bad").replace("> EHLO {domain}\n< 250", "> EHLO {domain}\n< 354"))
    maillab = [sys.executable, "-m", "simulator.cli"]
    env = dict(os.environ, MAILLAB_DATA=str(tmp_path / "data"))
    ok = subprocess.run(maillab + ["lint", str(good)], capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 errors" in ok.stdout.splitlines()[-1]
    failed = subprocess.run(maillab + ["lint", str(bad)], capture_output=True, text=True, timeout=120, env=env)
    assert failed.returncode == 1
    assert f"{bad}:12: reply 354 can never answer EHLO (RFC 5321 4.3.2)" in failed.stdout
    assert "1 error" in failed.stdout.splitlines()[-1]


def test_lint_replays_in_parallel_report_what_one_at_a_time_reports(tmp_path):
    """`--jobs` changes how long lint takes, never what it finds (each replay has its own servers)."""
    broken = LESSON.replace("RCPT TO:<$to>\n```\n::::", "RCPT TO:<nobody@example.com>\n```\n::::")
    for number in range(3):
        (tmp_path / f"good{number}.md").write_text(LESSON.replace("id: engine-demo", f"id: good-{number}"))
        (tmp_path / f"bad{number}.md").write_text(broken.replace("id: engine-demo", f"id: bad-{number}"))
    one = [str(p) for p in lint_lessons([tmp_path], jobs=1).problems]
    four = [str(p) for p in lint_lessons([tmp_path], jobs=4).problems]
    assert four == one
    assert sorted(line.split(":", 1)[0] for line in one if "solution replay failed" in line) == [
        str(tmp_path / f"bad{number}.md") for number in range(3)
    ]


def test_lint_cli_refuses_zero_jobs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "simulator.cli", "lint", "--jobs", "0", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--jobs: must be 1 or more" in result.stderr


def test_lint_translations_must_agree(tmp_path):
    (tmp_path / "demo.md").write_text(LESSON)
    (tmp_path / "demo.zh.md").write_text(LESSON.replace("< 5xx", "< 4xx"))
    report = lint_lessons([tmp_path], replay=False)
    messages = [str(p) for p in report.problems if p.severity == "error"]
    assert any("demo.zh.md" in m and "step 'provoke': checks differ from demo.md" in m for m in messages), messages


def test_lint_unknown_profile_and_prerequisite(tmp_path):
    text = LESSON.replace("profile: rfc", "profile: nosuch\nprerequisites: [missing-lesson]")
    (tmp_path / "p.md").write_text(text)
    report = lint_lessons([tmp_path / "p.md"], replay=False)
    assert any("no persona named 'nosuch'" in p.message for p in report.problems)


def test_store_facts_read_a_real_maildir(tmp_path):
    from mockservers.store import MailStore

    store = MailStore(tmp_path)
    store.deliver(["bob@example.com"], b"Subject: Hello there\r\n\r\nbody text\r\n")
    run = run_for(tmp_path)
    run.server_facts = StoreFacts(store)
    assert run.server_fact('mailbox bob@example.com has subject "hello"')
    assert run.server_fact('mailbox $to has body "BODY TEXT"')
    assert run.server_fact("mailbox bob@example.com count 1")
    assert not run.server_fact("mailbox bob@example.com count 2")
    assert run.server_fact("queue remote.test count 0")


# --- progress -----------------------------------------------------------------------------------


def test_progress_roundtrip_reset_and_stale_hash(tmp_path):
    parsed = lesson(tmp_path)
    path = tmp_path / "data" / "progress.json"
    progress = Progress.load(path)
    progress.mark(parsed, ["greet", "login"])
    progress.save()
    again = Progress.load(path)
    assert again.completed(parsed) == {"greet", "login"}
    assert again.last() == ("engine-demo", "send")
    edited = lesson(tmp_path, LESSON.replace("< 5xx", "< 4xx"), "edited.md")
    assert edited.steps_hash != parsed.steps_hash
    assert again.completed(edited) == set()  # stale progress is not trusted
    assert again.reset("engine-demo") and not again.reset("engine-demo")
    again.save()
    assert Progress.load(path).entries() == {}


def test_progress_write_is_atomic(tmp_path, monkeypatch):
    parsed = lesson(tmp_path)
    path = tmp_path / "progress.json"
    progress = Progress.load(path)
    progress.mark(parsed, ["greet"])
    progress.save()
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    progress.mark(parsed, ["login"])
    with pytest.raises(OSError):
        progress.save()
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".progress-")] == []


def test_damaged_progress_file_is_set_aside(tmp_path):
    path = tmp_path / "progress.json"
    path.write_text("{not json")
    assert Progress.load(path).entries() == {}
    assert (tmp_path / "progress.json.damaged").exists()


def test_progress_cli(tmp_path):
    parsed = lesson(tmp_path)
    progress = Progress.load(tmp_path / "progress.json")
    progress.mark(parsed, ["greet"])
    progress.save()
    maillab = [sys.executable, "-m", "simulator.cli"]
    shown = subprocess.run(maillab + ["progress", "--data", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert "engine-demo" in shown.stdout and "1/5 steps" in shown.stdout
    reset = subprocess.run(maillab + ["progress", "--data", str(tmp_path), "--reset", "engine-demo"], capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0
    assert json.loads((tmp_path / "progress.json").read_text())["lessons"] == {}
    missing = subprocess.run(maillab + ["progress", "--data", str(tmp_path), "--reset", "nope"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1



def test_a_step_wants_the_refusal_it_teaches():
    """reply-codes' second step asks for RCPT TO:<nobody@...> and its 550, nothing else."""
    from simulator.course.catalog import load_catalog

    bundled = load_catalog().get("reply-codes", "en")
    run = LessonRun(bundled, lesson_variables(bundled, lesson_profile(bundled)))
    run.received(["220 mail.example.com ESMTP Postfix"])
    run.sent("EHLO learner.example")
    run.received(["250 mail.example.com"])
    assert run.current.step.id == "permanent"
    refusal = ["550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table"]
    assert run.wants("RCPT TO:<nobody@example.com>", refusal)
    assert not run.wants("RCPT TO:<nobody@example.com>", ["554 5.7.1 Relay access denied"])
    assert not run.wants("RCPT TO:<bob@example.com>", refusal)


def test_a_driver_sees_pending_replies_and_can_skip_a_step(tmp_path):
    run = run_for(tmp_path)
    run.received(["220 mail.example.com ESMTP Postfix"])
    run.sent("HELO learner.example")
    assert run.waiting_for_reply
    run.received(["250 mail.example.com"])
    assert not run.waiting_for_reply
    assert run.current.step.id == "login"
    run.skip_step()
    assert "login" in run.completed_steps()
    assert [e for e in run.record if e["event"] == "skipped"][-1]["step"] == "login"
