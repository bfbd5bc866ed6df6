"""Classroom labs: a class folder, 30 students on one server over real sockets, isolation,
server-side grading of a mixed class, `serve --classroom`, and redacted-line matching."""

from __future__ import annotations

import csv
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mockservers.server import EmbeddedServers
from simulator.classroom.config import MAX_STUDENTS, ClassConfig, ClassroomError, class_profile, init_class, load_class
from simulator.classroom.grading import format_csv, grade_class
from simulator.classroom.config import load_lesson
from simulator.cli import main
from simulator.course.runner import LessonRun, redacted_matches, reply_matches
from waiting import wait_until
from test_classroom_helpers import Student, b64, plain, write_pack

pytestmark = pytest.mark.timeout(120)

PROJECT = Path(__file__).resolve().parents[1]
STEPS = ["ehlo", "login", "send", "fetch", "list"]


# --- the class of 30 ---------------------------------------------------------------------------


@dataclass
class Room:
    config: ClassConfig
    servers: EmbeddedServers
    smtp: int
    pop3: int
    expected: dict[str, list[str]] = field(default_factory=dict)
    replies: dict[str, list[str]] = field(default_factory=dict)

    def source(self, index: int) -> str:
        return f"127.0.0.{10 + index}"


def _student_work(room: Room, index: int) -> None:
    """What student number `index` (0-based) does; `room.expected` is the truth for grading."""
    config = room.config
    me = config.students[index]
    partner = config.partner(me)
    other = config.students[(index + 5) % len(config.students)]
    source = room.source(index)
    replies = room.replies.setdefault(me.id, [])
    if index < 8:  # A: complete, AUTH LOGIN, writes to the partner
        with Student(room.smtp, source) as s:
            s.reply()
            s.cmd("EHLO laptop-a")
            assert s.cmd("AUTH LOGIN").startswith("334")
            assert s.cmd(b64(me.address)).startswith("334")
            replies.append(s.cmd(b64(me.secret)))
            replies.append(s.message(me.address, partner.address, f"hello from {me.local_part}"))
            s.cmd("QUIT")
        with Student(room.pop3, source) as p:
            p.reply()
            p.cmd(f"USER {me.address}")
            replies.append(p.cmd(f"PASS {me.secret}"))
            p.multiline("LIST")
            p.cmd("QUIT")
        room.expected[me.id] = STEPS
    elif index < 12:  # B: complete, AUTH PLAIN, writes to themself, local part as POP3 user
        with Student(room.smtp, source) as s:
            s.reply()
            s.cmd("EHLO laptop-b")
            replies.append(s.cmd(f"AUTH PLAIN {plain(me.address, me.secret)}"))
            replies.append(s.message(me.address, me.address, f"hello from {me.local_part}"))
            s.cmd("QUIT")
        with Student(room.pop3, source) as p:
            p.reply()
            p.cmd(f"USER {me.local_part}")
            replies.append(p.cmd(f"PASS {me.secret}"))
            p.multiline("LIST")
            p.cmd("QUIT")
        room.expected[me.id] = STEPS
    elif index < 18:  # C: half way: sends, never fetches (and leaves without QUIT)
        with Student(room.smtp, source) as s:
            s.reply()
            s.cmd("EHLO laptop-c")
            replies.append(s.cmd(f"AUTH PLAIN {plain(me.address, me.secret)}"))
            replies.append(s.message(me.address, partner.address, f"hello from {me.local_part}"))
        room.expected[me.id] = STEPS[:3]
    elif index < 22:  # D: tries to log in as a classmate with their own secret, then sends unauthenticated
        with Student(room.smtp, source) as s:
            s.reply()
            s.cmd("EHLO laptop-d")
            replies.append(s.cmd(f"AUTH PLAIN {plain(other.address, me.secret)}"))
            assert s.cmd("AUTH LOGIN").startswith("334")
            assert s.cmd(b64(other.address)).startswith("334")
            replies.append(s.cmd(b64(me.secret)))
            replies.append(s.message(me.address, partner.address, f"hello from {me.local_part}"))
            s.cmd("QUIT")
        # Never logged in: nothing proves who they are (MAIL FROM names anyone), so no evidence.
        room.expected[me.id] = []
    elif index < 25:  # E: greets, then tries a classmate's mailbox with their own secret
        with Student(room.smtp, source) as s:
            s.reply()
            s.cmd("EHLO laptop-e")
            s.cmd("QUIT")
        with Student(room.pop3, source) as p:
            p.reply()
            p.cmd(f"USER {other.address}")
            replies.append(p.cmd(f"PASS {me.secret}"))
            replies.append(p.cmd(f"APOP {other.address} 0123456789abcdef0123456789abcdef"))
            p.cmd(f"USER {me.address}")
            replies.append(p.cmd(f"PASS {me.secret}"))
            p.cmd("QUIT")
        room.expected[me.id] = STEPS[:1]
    else:  # F: never connects
        room.expected[me.id] = []


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    root = tmp_path_factory.mktemp("classroom")
    config = init_class(root / "room", students=30, lessons=write_pack(root), domain="class.test", server_host="127.0.0.1")
    servers = EmbeddedServers(class_profile(config), config.data_dir, smtp_port=0, pop3_port=0)
    servers.start()
    try:
        room = Room(config, servers, servers.port_of("SMTP"), servers.port_of("POP3"))
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                _student_work(room, index)
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        transcripts = config.data_dir / "transcripts"

        def all_closed() -> bool:
            files = list(transcripts.rglob("*.jsonl"))
            return bool(files) and all('"close"' in path.read_text(encoding="utf-8") for path in files)

        wait_until(all_closed, what="every transcript's close record")
        yield room
    finally:
        servers.stop()


def test_init_writes_config_students_and_handouts(room):
    config = load_class(room.config.dir)
    assert config.domain == "class.test" and config.profile == "rfc" and len(config.students) == 30
    assert [s.id for s in config.students[:3]] == ["s01", "s02", "s03"]
    assert len({s.secret for s in config.students}) == 30
    students_csv = config.dir / "students.csv"
    assert stat.S_IMODE(students_csv.stat().st_mode) == 0o600
    with open(students_csv, newline="") as handle:
        assert next(csv.reader(handle)) == ["id", "address", "secret"]
    handout = (config.dir / "handouts" / "s07.txt").read_text()
    me = config.student("s07")
    for text in (me.address, me.secret, b64(me.address), "127.0.0.1", "2525", "2110",
                 f"maillab --server 127.0.0.1 --smtp-port 2525 --pop3-port 2110 --login {me.address}", "telnet 127.0.0.1 2525"):
        assert text in handout
    assert "s08@class.test" in handout  # the partner
    toml = (config.dir / "class.toml").read_text()
    assert "created = " in toml and "[ports]" in toml and str(config.lessons) in toml


def test_init_refuses_to_overwrite(room, capsys):
    before = (room.config.dir / "students.csv").read_text()
    assert main(["classroom", "init", str(room.config.dir), "--students", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refusing to overwrite" in err
    assert (room.config.dir / "students.csv").read_text() == before


def test_init_checks_its_options(tmp_path):
    with pytest.raises(ClassroomError, match="--students"):
        init_class(tmp_path / "a", students=0)
    with pytest.raises(ClassroomError, match="--profile"):
        init_class(tmp_path / "b", students=2, profile="no-such-persona")
    with pytest.raises(ClassroomError, match="--prefix"):
        init_class(tmp_path / "c", students=2, prefix="a b")
    with pytest.raises(ClassroomError, match=f"between 1 and {MAX_STUDENTS}"):
        init_class(tmp_path / "d", students=MAX_STUDENTS + 1)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_class_of_a_thousand_gets_four_digit_ids(tmp_path):
    config = init_class(tmp_path / "big", students=1000, domain="class.test")
    ids = [student.id for student in config.students]
    assert len(set(ids)) == 1000 and ids[0] == "s0001" and ids[-1] == "s1000"
    assert len({student.secret for student in config.students}) == 1000


def test_class_profile_accounts_and_limits(room):
    profile = class_profile(room.config)
    assert [a.address for a in profile.accounts] == [s.address for s in room.config.students]
    assert profile.find_account("alice@example.com") is None  # the persona's public demo accounts are gone
    assert profile.is_local_domain("class.test")
    assert profile.policies.max_connections_per_client == 8


def test_isolation_replies(room):
    for index in range(8):
        me = room.config.students[index].id
        assert room.replies[me][0].startswith("235") and room.replies[me][1].startswith("250")
        assert room.replies[me][2].startswith("+OK")
    for index in range(18, 22):  # AUTH as a classmate with one's own secret
        plain_reply, login_reply, sent = room.replies[room.config.students[index].id]
        assert plain_reply.startswith("535") and login_reply.startswith("535")
        assert sent.startswith("250")  # mail between students works (this persona needs no AUTH for it)
    for index in range(22, 25):  # a classmate's mailbox with one's own secret
        cross_pass, cross_apop, own = room.replies[room.config.students[index].id]
        assert cross_pass.startswith("-ERR") and cross_apop.startswith("-ERR") and own.startswith("+OK")


def test_mail_between_students_arrives(room):
    from mockservers.store import MailStore

    store = MailStore(room.config.data_dir)
    s02 = room.config.student("s02")
    subjects = [store.read(s02.address, m.uid) for m in store.messages(s02.address)]
    assert any(b"Subject: hello from s01" in raw for raw in subjects)


def test_transcripts_and_log_never_hold_secrets(room):
    secrets = set()
    for student in room.config.students:
        secrets |= {student.secret, b64(student.secret), plain(student.address, student.secret)}
    files = list((room.config.data_dir / "transcripts").rglob("*.jsonl"))
    assert len(files) >= 40
    for path in files:
        text = path.read_text()
        assert not any(secret in text for secret in secrets), path


def test_grading_a_mixed_class_equals_the_truth(room):
    lesson = load_lesson(room.config, "class-exchange")
    report = grade_class(room.config, lesson)
    got = {grade.id: list(grade.completed) for grade in report.students}
    assert got == room.expected
    assert report.summary().startswith("class: 30 students, 12 complete, 9 partial, 9 with no step (9 never connected)")
    rows = list(csv.reader(format_csv(report).splitlines()))
    assert rows[0][:4] == ["id", "address", "completed", "total"] and len(rows) == 31
    assert rows[1][:4] == ["s01", "s01@class.test", "5", "5"]
    assert all(grade.problem is None for grade in report.students)


class RescanningRun(LessonRun):
    """The plain rule, as an oracle: rescan every event since the step began on each call."""

    def group_done(self, step: Any, group: Any, events: list[Any]) -> int | None:
        sequence = [e for e in group.expectations if e.kind in ("send", "reply")]
        position = end = 0
        for index, event in enumerate(events):
            if position >= len(sequence):
                break
            expectation = sequence[position]
            if expectation.kind == "send":
                if event.sent is None or not self.matches_line(expectation, event.sent):
                    continue
                replies = []
                following = position + 1
                while following < len(sequence) and sequence[following].kind == "reply":
                    replies.append(sequence[following])
                    following += 1
                if replies:
                    if event.reply is None:
                        return None
                    if not all(reply_matches(r.text, event.reply) for r in replies):
                        continue
                position, end = following, index + 1
            elif event.reply is not None and reply_matches(expectation.text, event.reply):
                position, end = position + 1, index + 1
        if position < len(sequence) or not self.facts_hold(group):
            return None
        return end


def test_resumed_matching_equals_a_rescan(room):
    """The lesson run's resumed (linear) matching decides exactly as a rescan on the same records."""
    from simulator.classroom.tracker import ClassTracker, LessonProgress

    lesson = load_lesson(room.config, "class-exchange")
    tracker = ClassTracker(room.config, lesson, live=False)
    tracker.poll()
    for state in tracker.students.values():
        variants = [run.variables for run in state.progress.runs]
        plain_runs = LessonProgress(lesson, variants, tracker.facts, run_class=RescanningRun)
        resumed = LessonProgress(lesson, variants, tracker.facts, run_class=LessonRun)
        for session in sorted(state.sessions, key=lambda s: (s.started, s.id)):
            for record in session.records:
                plain_runs.feed(record)
                resumed.feed(record)
        for a, b in zip(plain_runs.runs, resumed.runs):
            assert a.completed_steps() == b.completed_steps(), state.student.id
            assert [e for e in a.record if e["event"] == "step complete"] == [
                e for e in b.record if e["event"] == "step complete"
            ]
        assert plain_runs.done_at == resumed.done_at


def test_grade_command_prints_markdown_and_csv(room, capsys):
    assert main(["classroom", "grade", str(room.config.dir), "--lesson", "class-exchange"]) == 0
    out = capsys.readouterr().out
    assert "| s01 | s01@class.test | 5/5 |" in out and "| s13 | s13@class.test | 3/5 |" in out
    assert out.rstrip().splitlines()[-1].startswith("class: 30 students, 12 complete, 9 partial")
    assert main(["classroom", "grade", str(room.config.dir), "--lesson", "class-exchange", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith("id,address,completed,total,ehlo,login,send,fetch,list")
    assert "12 complete" in captured.err
    assert main(["classroom", "grade", str(room.config.dir), "--lesson", "no-such-lesson"]) == 2


def test_a_bundled_lesson_grades_too(room):
    report = grade_class(room.config, load_lesson(room.config, "smtp-hello"))
    by_id = {grade.id: grade for grade in report.students}
    assert by_id["s01"].completed and not by_id["s30"].completed


# --- the dashboard over the class of 30 -------------------------------------------------------


async def test_dashboard_shows_every_students_state(room):
    from simulator.classroom.dashboard import ClassroomApp, StudentScreen
    from textual.widgets import DataTable

    app = ClassroomApp(room.config, load_lesson(room.config, "class-exchange"), interval=0.2)
    async with app.run_test(size=(140, 45)) as pilot:
        for _ in range(100):
            if app.snapshot is not None:
                break
            await pilot.pause(0.05)
        table = app.query_one(DataTable)

        def cell(student: str, column: str) -> str:
            return str(table.get_cell(student, column))

        assert table.row_count == 30
        assert cell("s01", "step") == "5/5 done" and cell("s01", "on") == "·"
        assert cell("s09", "step") == "5/5 done"
        assert cell("s13", "step") == "3/5 fetch" and cell("s13", "command") == "."
        assert cell("s13", "reply").startswith("250 2.0.0 Ok: queued")
        # s19 never logged in (a classmate's account, then mail without AUTH): nothing is charged
        # to anyone from its session, whatever address it typed in MAIL FROM.
        assert cell("s19", "step") == "0/5 ehlo" and cell("s19", "errors") == "0" and cell("s19", "command") == ""
        assert cell("s23", "step") == "1/5 login" and cell("s23", "errors") == "2"
        assert cell("s26", "step") == "0/5 ehlo" and cell("s26", "stuck") == "-" and cell("s26", "command") == ""
        assert cell("s13", "stuck").endswith("s")
        summary = str(app.query_one("#class-summary").render())
        assert "12/30 done" in summary and "mails sent" in summary
        assert "535 5.7.8" in str(app.query_one("#class-errors").render())
        # follow one student: their sessions only
        table.move_cursor(row=12)
        await pilot.press("enter")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, StudentScreen) and screen.student_id == "s13"
        for _ in range(50):
            if screen.plain_lines:
                break
            await pilot.pause(0.05)
        text = "\n".join(screen.plain_lines)
        assert "MAIL FROM:<s13@class.test>" in text and "AUTH PLAIN ***" in text
        assert not any("MAIL FROM:<s" in line and "s13@" not in line for line in screen.plain_lines)
        await pilot.press("escape")
        assert not isinstance(app.screen, StudentScreen)


# --- policies of the class profile -------------------------------------------------------------


def test_sender_must_match_auth_when_the_class_profile_says_so(tmp_path):
    profile_file = tmp_path / "strict.toml"
    profile_file.write_text(
        'extends = "rfc"\nname = "strict-class"\n[policies]\nrequire_auth_for_mail = true\n'
        "sender_must_match_auth = true\nmax_connections_per_client = 3\n"
    )
    config = init_class(tmp_path / "strict", students=3, profile=str(profile_file), domain="class.test", server_host="127.0.0.1")
    assert load_class(config.dir).profile == str(profile_file.resolve())
    profile = class_profile(load_class(config.dir))
    assert profile.policies.max_connections_per_client == 3  # the profile's own limit is kept
    s01, s02 = config.students[0], config.students[1]
    with EmbeddedServers(profile, config.data_dir, smtp_port=0, pop3_port=0) as servers:
        with Student(servers.port_of("SMTP")) as s:
            s.reply()
            s.cmd("EHLO laptop")
            assert s.cmd(f"MAIL FROM:<{s01.address}>").startswith("530")  # AUTH first
            assert s.cmd(f"AUTH PLAIN {plain(s01.address, s01.secret)}").startswith("235")
            assert s.cmd(f"MAIL FROM:<{s02.address}>").startswith("553")  # not owned by s01
            assert s.message(s01.address, s02.address, "hello from s01").startswith("250")


def test_per_client_connection_limit(room):
    held = [Student(room.smtp, "127.0.0.200") for _ in range(8)]
    try:
        for client in held:
            assert client.reply()[-1].startswith("220")
        with Student(room.smtp, "127.0.0.200") as ninth:
            assert ninth.reply()[-1].startswith("421")
        with Student(room.smtp, "127.0.0.201") as classmate:  # another machine is not starved
            assert classmate.reply()[-1].startswith("220")
    finally:
        for client in held:
            client.close()


# --- maillab serve --classroom -----------------------------------------------------------------


def _maillab(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", *args], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **options,
    )


def test_serve_classroom_subprocess(tmp_path):
    config = init_class(tmp_path / "room", students=4, domain="class.test", server_host="127.0.0.1")
    bad = _maillab("serve", "--classroom", str(config.dir), "--data", str(tmp_path / "x"))
    out, err = bad.communicate(timeout=30)
    assert bad.returncode == 2 and err.strip().count("\n") == 0 and "--data" in err
    server = _maillab("serve", "--classroom", str(config.dir), "--smtp-port", "0", "--pop3-port", "0")
    try:
        ports = {}
        banner = []
        while len(banner) < 4:
            line = server.stdout.readline()
            assert line, server.stderr.read()
            banner.append(line)
            if " listening on " in line:
                name, _, rest = line.partition(" listening on ")
                ports[name] = int(rest.split()[0].rsplit(":", 1)[1])
        assert banner[0].startswith("SMTP listening on 127.0.0.1:")  # loopback unless --host says otherwise
        assert "4 students @class.test" in banner[2] and "at most 8 connections" in banner[2]
        assert "--host 0.0.0.0" in banner[3]
        s03 = config.students[2]
        with Student(ports["SMTP"]) as s:
            s.reply()
            s.cmd("EHLO laptop")
            assert s.cmd("AUTH LOGIN").startswith("334")
            assert s.cmd(b64(s03.secret)).startswith("334")  # the secret typed as the user name
            assert s.cmd(b64(s03.secret)).startswith("535")
            assert s.cmd(f"AUTH PLAIN {plain(s03.address, s03.secret)}").startswith("235")
            assert s.message(s03.address, config.students[3].address, "hello from s03").startswith("250")
            s.cmd("QUIT")
        with Student(ports["POP3"]) as p:
            p.reply()
            p.cmd(f"USER {config.students[3].address}")
            assert "has 1 message" in p.cmd(f"PASS {config.students[3].secret}")
            p.cmd("QUIT")
        assert (config.dir / "data" / "transcripts").is_dir()
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "authentication failed: <not an account>: unknown user" in out
    assert f"authenticated: {s03.address}" in out
    assert not any(s.secret in out for s in config.students)  # not even one typed in the wrong place


# --- redacted lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "line", "expected"),
    [
        ("AUTH PLAIN {plain:$user:$secret}", "AUTH PLAIN ***", True),
        ("AUTH PLAIN {plain:$user:$secret}", "auth plain ***", True),
        ("AUTH LOGIN {base64:$user}", "AUTH LOGIN ***", True),
        ("{base64:$user}", "***", True),
        ("{base64:$secret}", "***", True),
        ("PASS $secret", "PASS ***", True),
        ("APOP $user {any}", "APOP s01@class.test ***", True),
        ("APOP $user {any}", "APOP s02@class.test ***", False),
        ("MAIL FROM:<$user>", "***", False),  # literal text is never hidden
        ("AUTH PLAIN", "AUTH PLAIN ***", False),
        ("AUTH LOGIN {base64:$user}", "AUTH PLAIN ***", False),
        ("PASS $secret", "PASS secret***", False),
    ],
)
def test_redacted_matches(pattern, line, expected):
    variables = {"user": "s01@class.test", "secret": "abcd-efgh-jkmn"}
    assert redacted_matches(pattern, line, variables) is expected


def test_a_redacted_failed_login_still_fails(tmp_path):
    from simulator.course.parser import parse_lesson_text
    from simulator.course.runner import LessonRun
    from test_classroom_helpers import CLASS_LESSON

    lesson = parse_lesson_text(CLASS_LESSON, tmp_path / "class-exchange.md")
    variables = {"user": "s01@class.test", "secret": "x", "to": "s02@class.test", "local": "s01", "domain": "class.test"}
    for accept, reply, done in ((True, "235 2.7.0 ok", True), (True, "535 5.7.8 no", False), (False, "235 2.7.0 ok", False)):
        run = LessonRun(lesson, dict(variables), accept_redacted=accept)
        run.received(["220 hi"])
        run.sent("EHLO laptop")
        run.received(["250 mail.class.test"])
        run.sent("AUTH PLAIN ***")
        if reply.startswith("235"):
            run.server_authenticated("s01@class.test")
        run.received([reply])
        assert ("login" in run.completed_steps()) is done, (accept, reply)
