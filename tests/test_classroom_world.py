"""A world class (`maillab classroom init --world`): three students with an address on two
domains of the bundled world, served over real loopback sockets (free ports, compressed lab
time), a message relayed from one domain to the other and a bounce for an unknown recipient,
then the tracker and grading from the servers' side; the CLI's output and its errors."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest

from simulator.classroom.config import (
    ClassroomError, class_limits, class_profile, class_world, init_class, load_class, load_lesson,
)
from simulator.classroom.grading import format_md, grade_class
from simulator.classroom.tracker import ClassTracker
from simulator.cli import main
from waiting import wait_until
from world_helpers import DEADLINE, RunningWorld, parse

pytestmark = pytest.mark.timeout(120)

PROJECT = Path(__file__).resolve().parents[1]

WORLD_LESSON = textwrap.dedent(
    """\
    ---
    id: world-exchange
    title: Mail your partner on the other domain, then read a bounce
    protocol: both
    ---
    # World exchange

    :::: step login
    ```expect
    ? authenticated as $user
    ```
    ::: hint
    `AUTH PLAIN` with the payload from your handout.
    :::
    ```solution
    AUTH PLAIN {plain:$user:$secret}
    ```
    ::::

    :::: step relay
    ```expect
    > RCPT TO:{any}<$to>{any}
    < 250
    > .
    < 250
    ! mailbox $to has mail from $user over 2 hops
    ```
    ::: hint
    `RCPT TO:<$to>`: your partner's address on $other_domain.
    :::
    ```solution
    MAIL FROM:<$user>
    RCPT TO:<$to>
    DATA
    Subject: hello from $local

    hi
    .
    ```
    ::::

    :::: step bounce
    ```expect
    > RCPT TO:{any}<$unknown>{any}
    < 250
    > .
    < 250
    ! mailbox $user has bounce for $unknown
    ```
    ::: hint
    `RCPT TO:<$unknown>`: nobody has that address.
    :::
    ```solution
    MAIL FROM:<$user>
    RCPT TO:<$unknown>
    DATA
    Subject: to nobody

    hi
    .
    ```
    ::::
    """
)


class WorldRoom:
    """The class, its running world and what the students received."""

    def __init__(self, root: Path) -> None:
        pack = root / "pack"
        pack.mkdir()
        (pack / "world-exchange.md").write_text(WORLD_LESSON, encoding="utf-8")
        self.config = init_class(root / "room", students=3, world="", lessons=pack, server_host="127.0.0.1")
        world = class_world(self.config).free_ports()
        self.lab = RunningWorld(world, self.config.data_dir, adapt=partial(class_limits, self.config))
        self.fetched: dict[str, list[bytes]] = {}


def _submit(room: WorldRoom, login: str, secret: str, recipient: str, subject: str) -> dict:
    home = login.rpartition("@")[2]
    with smtplib.SMTP("127.0.0.1", room.lab.servers.port_of(home, "SMTP"), timeout=DEADLINE) as client:
        client.ehlo("laptop")
        client.login(login, secret)
        message = f"From: {login}\r\nTo: {recipient}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
        return client.sendmail(login, [recipient], message)


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    room = WorldRoom(tmp_path_factory.mktemp("world-class"))
    try:
        s01, s02, s03 = room.config.students
        unknown = room.config.unknown_recipient
        assert unknown == "nobody@sina.lab"
        # s01: to the partner on sina.lab (relayed), then to nobody there (bounced back).
        assert _submit(room, s01.address, s01.secret, s02.other_address, "hello from s01") == {}
        room.lab.wait_for("qq.lab", "relayed", s02.other_address)
        assert _submit(room, s01.address, s01.secret, unknown, "to nobody") == {}
        room.lab.wait_for("qq.lab", "bounce sent", unknown)
        # s03: logs in, but only writes to their own mailbox on qq.lab (one hop, no bounce).
        assert _submit(room, s03.address, s03.secret, s03.address, "hello from s03") == {}
        room.fetched["s02"] = room.lab.fetch_all("sina.lab", s02.other_address, s02.secret)
        room.fetched["s01"] = room.lab.fetch_all("qq.lab", s01.address, s01.secret)

        def all_closed() -> bool:
            files = list(room.config.data_dir.glob("*/transcripts/*/*.jsonl"))
            return len(files) >= 6 and all('"close"' in path.read_text(encoding="utf-8") for path in files)

        wait_until(all_closed, timeout=DEADLINE, what="every transcript's close record")
        yield room
    finally:
        room.lab.stop()


def test_init_gives_each_student_two_domains_and_a_handout_naming_both(room):
    config = load_class(room.config.dir)
    assert config.is_world and config.world == "default" and config.domains == ("qq.lab", "sina.lab")
    s01 = config.student("s01")
    assert (s01.address, s01.other_address) == ("s01@qq.lab", "s01@sina.lab")
    assert config.partner_address(s01) == "s02@sina.lab"
    header = (config.dir / "students.csv").read_text().splitlines()[0]
    assert header == "id,address,secret,other_address"
    handout = (config.dir / "handouts" / "s01.txt").read_text()
    for text in ("s01@qq.lab", "s01@sina.lab", s01.secret, "s02@sina.lab", "nobody@sina.lab",
                 "11587", "11110", "12587", "12110", "10053", "dig @127.0.0.1 -p 10053 MX sina.lab",
                 "maillab --server 127.0.0.1 --smtp-port 11587 --pop3-port 11110 --login s01@qq.lab --other-login s01@sina.lab",
                 "maillab --server 127.0.0.1 --smtp-port 12587 --pop3-port 12110 --login s01@sina.lab --other-login s01@qq.lab"):
        assert text in handout, text


def test_the_class_world_has_the_students_and_no_demo_accounts(room):
    world = class_world(room.config)
    accounts = {d.name: [a.address for a in d.accounts] for d in world.domains}
    assert accounts["qq.lab"] == ["s01@qq.lab", "s02@qq.lab", "s03@qq.lab"]
    assert accounts["sina.lab"] == ["s01@sina.lab", "s02@sina.lab", "s03@sina.lab"]
    assert accounts["163.lab"] == [] and accounts["school.lab"] == []  # carol's public secret is gone
    servers = room.lab.servers
    submission = servers.domains["qq.lab"].submission.profile
    assert submission.policies.max_connections_per_client == 8 and submission.policies.hide_unknown_users
    assert servers.domains["qq.lab"].mx.profile.policies.max_connections_per_client == 0  # relays are not people
    assert class_profile(room.config).hostname == "smtp.qq.lab"


def test_the_relayed_message_and_the_bounce_arrive(room):
    (relayed,) = room.fetched["s02"]
    message = parse(relayed)
    assert message["Return-Path"] == "<s01@qq.lab>" and message["Subject"] == "hello from s01"
    received = message.get_all("Received")
    assert len(received) == 2 and "by mx.sina.lab" in received[0] and "by smtp.qq.lab" in received[1]
    (bounce,) = room.fetched["s01"]
    report = parse(bounce)
    assert report.get_content_type() == "multipart/report" and report.get_param("report-type") == "delivery-status"
    assert b"Final-Recipient: rfc822; nobody@sina.lab" in bounce and b"Status: 5.1.1" in bounce


def test_grading_sees_the_relay_and_the_bounce_for_s01_only(room):
    report = grade_class(room.config, load_lesson(room.config, "world-exchange"))
    got = {grade.id: list(grade.completed) for grade in report.students}
    assert got == {"s01": ["login", "relay", "bounce"], "s02": [], "s03": ["login"]}
    assert all(grade.problem is None for grade in report.students)
    table = format_md(report)
    assert "| s01 | s01@qq.lab | 3/3 | ✓ | ✓ | ✓ |" in table and "| s03 | s03@qq.lab | 1/3 | ✓ | · | · |" in table


def test_the_tracker_follows_both_domains_and_ignores_the_relays(room):
    tracker = ClassTracker(room.config, load_lesson(room.config, "world-exchange"), live=True)
    snapshot = tracker.poll()
    rows = {row.id: row for row in snapshot.students}
    assert rows["s01"].sessions == 3 and rows["s01"].completed == 3  # SMTP twice on qq.lab, POP3 on qq.lab
    assert rows["s02"].sessions == 1  # POP3 on sina.lab: their session on the second domain is theirs
    assert rows["s03"].sessions == 1 and rows["s03"].current_step == "relay"
    assert snapshot.mails_sent == 3  # the students' submissions, not the MX's arrivals
    assert snapshot.unattributed == 0
    relays = [s for s in tracker.sessions.values() if s.relay]
    assert len(relays) >= 4 and all(s.student is None for s in relays)  # relay client + MX side, twice
    _, lines = tracker.lines("s02")
    assert any(" POP3@sina.lab › USER s02@sina.lab" in line for line in lines)  # the follow view names the domain


def test_server_facts_of_the_world(room):
    from simulator.course.runner import LessonRun

    lesson = load_lesson(room.config, "world-exchange")
    tracker = ClassTracker(room.config, lesson, live=False)
    run = LessonRun(lesson, {}, server_facts=tracker.facts)
    assert run.server_fact("mailbox s02@sina.lab has mail from s01@qq.lab over 2 hops")
    assert not run.server_fact("mailbox s02@sina.lab has mail from s01@qq.lab over 3 hops")
    assert not run.server_fact("mailbox s03@qq.lab has mail from s03@qq.lab over 2 hops")  # delivered locally: one hop
    assert run.server_fact("mailbox s03@qq.lab has mail from s03@qq.lab over 1 hop")
    assert run.server_fact("mailbox s01@qq.lab has bounce for nobody@sina.lab")
    assert run.server_fact("mailbox s01@qq.lab has bounce")
    assert not run.server_fact("mailbox s01@qq.lab has bounce for s02@sina.lab")
    assert not run.server_fact("mailbox s03@qq.lab has bounce")


# --- the command line --------------------------------------------------------------------------


def test_cli_init_world_prints_both_domains(tmp_path, capsys):
    assert main(["classroom", "init", str(tmp_path / "c"), "--students", "3", "--world", "--server-host", "10.0.0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("3 students, s01@qq.lab .. s03@qq.lab and s01@sina.lab .. s03@sina.lab")
    assert out[1].startswith("  world default, handouts in ")
    assert out[2] == "  handouts say: server 10.0.0.5, qq.lab SMTP 11587 POP3 11110, sina.lab SMTP 12587 POP3 12110"
    assert 'world = "default"' in (tmp_path / "c" / "class.toml").read_text()
    assert main(["classroom", "init", str(tmp_path / "d"), "--students", "2", "--world", "--domain", "163.lab,school.lab"]) == 0
    assert load_class(tmp_path / "d").students[1].other_address == "s02@school.lab"


def test_cli_init_refuses_a_broken_world_file(tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text('[world]\nname = "w"\n\n[[domain]]\nname = "a.lab"\npersona = "rfc"\naddress = "10.1.2.3"\n', encoding="utf-8")
    assert main(["classroom", "init", str(tmp_path / "c"), "--students", "3", "--world", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"maillab classroom: {broken}:7: 10.1.2.3 is not a loopback address (127.0.0.0/8): the lab never leaves this machine"
    assert not (tmp_path / "c").exists()
    for options, message in (
        (["--domain", "qq.lab,mars.lab"], "--domain: 'mars.lab' is not a domain of world 'default'"),
        (["--domain", "qq.lab"], "--domain must name two different domains"),
        (["--profile", "qq"], "--profile cannot be used with --world"),
    ):
        assert main(["classroom", "init", str(tmp_path / "e"), "--students", "3", "--world", *options]) == 2
        assert message in capsys.readouterr().err


def test_a_broken_class_toml_names_its_line(tmp_path):
    config = init_class(tmp_path / "c", students=2, world="")
    path = config.dir / "class.toml"
    text = path.read_text()
    line = next(n for n, l in enumerate(text.splitlines(), 1) if l.startswith("domains = "))
    path.write_text(text.replace('domains = ["qq.lab", "sina.lab"]', 'domains = ["qq.lab", "venus.lab"]'))
    with pytest.raises(ClassroomError, match=rf"^{path}:{line}: domains: 'venus.lab' is not a domain"):
        load_class(config.dir)
    path.write_text(text.replace("prefix = ", "colour = 1\nprefix = "))
    with pytest.raises(ClassroomError, match=rf"^{path}:{line + 1}: unknown key 'colour'"):
        load_class(config.dir)


def test_serve_a_world_class_subprocess(tmp_path):
    """`maillab serve --classroom DIR` runs the class's world on loopback, secrets never printed."""
    world_file = tmp_path / "two.toml"
    world_file.write_text(
        textwrap.dedent(
            """\
            [world]
            name = "two"
            dns_port = 0
            relay_port = 0
            time_scale = 60
            [[domain]]
            name = "a.lab"
            persona = "qq"
            address = "127.0.0.2"
            submission_port = 0
            pop3_port = 0
            [[domain]]
            name = "b.lab"
            persona = "sina"
            address = "127.0.0.3"
            submission_port = 0
            pop3_port = 0
            """
        ),
        encoding="utf-8",
    )
    config = init_class(tmp_path / "room", students=2, world=str(world_file), server_host="127.0.0.1")
    bad = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "serve", "--classroom", str(config.dir), "--smtp-port", "2525"],
        cwd=PROJECT, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "--smtp-port cannot be used with a world class" in bad.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "serve", "--classroom", str(config.dir)],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines: list[str] = []
        while not any(line.startswith("note: only this machine") for line in lines):
            line = server.stdout.readline()
            assert line, server.stderr.read()
            lines.append(line.rstrip("\n"))
        ports = {}
        for line in lines:
            domain, _, rest = line.partition(": ")
            if " listening on " in rest:
                name, _, where = rest.partition(" listening on ")
                ports[(domain, name)] = where.split()[0]
        assert ports[("world", "DNS")].startswith("127.0.0.1:")
        assert ports[("b.lab", "SMTP")].startswith("127.0.0.1:") and ports[("a.lab", "POP3")].startswith("127.0.0.1:")
        assert any(line.startswith("class ") and "2 students @a.lab and @b.lab" in line and "at most 8 connections" in line for line in lines)
        s02 = config.students[1]
        with smtplib.SMTP("127.0.0.1", int(ports[("b.lab", "SMTP")].rsplit(":", 1)[1]), timeout=DEADLINE) as client:
            client.ehlo("laptop")
            assert client.login(s02.other_address, s02.secret)[0] == 235
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"authenticated: {s02.other_address}" in out
    assert not any(s.secret in "\n".join(lines) + out for s in config.students)


def test_queue_lists_a_world_class(tmp_path, capsys):
    from mockservers.store import MailStore

    config = init_class(tmp_path / "room", students=2, world="")
    assert main(["queue", "--classroom", str(config.dir)]) == 0
    assert capsys.readouterr().out.startswith("no queued mail under ")
    MailStore(config.data_dir / "qq.lab").queue_outbound("s01@qq.lab", ["s02@sina.lab"], b"Subject: x\r\n\r\nhi\r\n")
    assert main(["queue", "--classroom", str(config.dir)]) == 0
    assert capsys.readouterr().out.startswith("room/qq.lab ")


async def test_dashboard_of_a_world_class(room):
    from textual.widgets import DataTable

    from simulator.classroom.dashboard import ClassroomApp, StudentScreen

    app = ClassroomApp(room.config, load_lesson(room.config, "world-exchange"), interval=0.2)
    async with app.run_test(size=(140, 30)) as pilot:
        for _ in range(100):
            if app.snapshot is not None:
                break
            await pilot.pause(0.05)
        table = app.query_one(DataTable)
        assert table.row_count == 3
        assert str(table.get_cell("s01", "step")) == "3/3 done" and str(table.get_cell("s03", "step")) == "1/3 relay"
        await pilot.press("enter")  # the first row: s01
        await pilot.pause(0.3)
        assert isinstance(app.screen, StudentScreen)
        assert "s01@qq.lab  s01@sina.lab" in str(app.screen.query_one("#student-title").render())


async def test_the_students_app_knows_the_world_variables_grading_uses(room, tmp_path, monkeypatch):
    """The handout's TUI line (`--login` and `--other-login`): the lesson the student opens by keys
    has the same $user, $other_user, $other_domain and $unknown as the tracker that grades it."""
    from tui_helpers import open_lesson

    from simulator.cli import build_parser
    from simulator.cli.options import merge_global_options
    from simulator.tui.app import MaillabApp

    s01 = room.config.student("s01")
    handout = (room.config.dir / "handouts" / "s01.txt").read_text()
    line = next(text.strip() for text in handout.splitlines() if "--login s01@qq.lab" in text)
    args = merge_global_options(build_parser().parse_args(line.split()[1:]))  # the handout's line, as typed
    monkeypatch.setenv("MAILLAB_SECRET", s01.secret)
    app = MaillabApp(
        data_dir=tmp_path / "app-data", lessons_dirs=[room.config.lessons], remote_host=args.server,
        smtp_port=room.lab.servers.port_of("qq.lab", "SMTP"), pop3_port=room.lab.servers.port_of("qq.lab", "POP3"),
        login=args.login, other_login=args.other_login,
    )
    lesson = load_lesson(room.config, "world-exchange")
    graded = ClassTracker(room.config, lesson, live=False).new_progress(s01).runs[0].variables
    async with app.run_test(size=(110, 32)) as pilot:
        screen = await open_lesson(pilot, app, "world-exchange")
        seen = screen.run.variables
        names = ("user", "secret", "other_user", "other_domain", "unknown")
        assert {name: seen[name] for name in names} == {name: graded[name] for name in names}
        assert (seen["other_user"], seen["other_domain"], seen["unknown"]) == ("s01@sina.lab", "sina.lab", "nobody@sina.lab")
