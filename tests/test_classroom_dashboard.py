"""The classroom dashboard followed live (Textual Pilot), and the TUI's `--server --login` mode
against a class server."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import DataTable

from mockservers.server import EmbeddedServers
from simulator.classroom.config import load_lesson
from simulator.classroom.config import class_profile, init_class
from simulator.classroom.dashboard import ClassroomApp, StudentScreen
from simulator.tui.app import MaillabApp, SecretScreen
from test_classroom_helpers import Student, plain, write_pack
from tui_helpers import open_lesson, type_text
from waiting import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_class(tmp_path):
    config = init_class(tmp_path / "room", students=3, lessons=write_pack(tmp_path), domain="class.test", server_host="127.0.0.1")
    with EmbeddedServers(class_profile(config), config.data_dir, smtp_port=0, pop3_port=0) as servers:
        yield config, servers


async def test_dashboard_follows_a_student_live(small_class):
    config, servers = small_class
    s02, s03 = config.students[1], config.students[2]
    app = ClassroomApp(config, load_lesson(config, "class-exchange"), interval=0.1)
    async with app.run_test(size=(140, 40)) as pilot:
        table = app.query_one(DataTable)

        def cell(column: str) -> str:
            return str(table.get_cell("s02", column))

        await wait_for(pilot, lambda: app.snapshot is not None)
        assert cell("step") == "0/5 ehlo" and cell("on") == "·"

        client = await asyncio.to_thread(Student, servers.port_of("SMTP"))
        try:
            await asyncio.to_thread(client.reply)
            await asyncio.to_thread(client.cmd, "EHLO live-laptop")
            # no AUTH, no MAIL FROM yet: the session belongs to nobody so far
            await wait_for(pilot, lambda: "1 sessions not yet attributed" in str(app.query_one("#class-summary").render()))
            reply = await asyncio.to_thread(client.cmd, f"AUTH PLAIN {plain(s02.address, s02.secret)}")
            assert reply.startswith("235")
            await wait_for(pilot, lambda: cell("step") == "2/5 send" and cell("on") == "●")
            assert cell("command") == "AUTH PLAIN ***" and cell("reply").startswith("235")

            table.move_cursor(row=1)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, StudentScreen))
            screen = app.screen
            await wait_for(pilot, lambda: any("EHLO live-laptop" in line for line in screen.plain_lines))
            await asyncio.to_thread(client.cmd, "NOOP")
            await wait_for(pilot, lambda: any(line.endswith("› NOOP") for line in screen.plain_lines))
            await pilot.press("escape")

            result = await asyncio.to_thread(client.message, s02.address, s03.address, "hello from s02")
            assert result.startswith("250")
            await wait_for(pilot, lambda: cell("step") == "3/5 fetch")
            await wait_for(pilot, lambda: "1 mails sent" in str(app.query_one("#class-summary").render()))
            await asyncio.to_thread(client.cmd, "QUIT")
        finally:
            client.close()
        await wait_for(pilot, lambda: cell("on") == "·")
        assert str(table.get_cell("s03", "step")) == "0/5 ehlo"  # receiving mail is not s03's work


async def test_tui_login_mode_is_the_student(small_class, tmp_path, monkeypatch):
    config, servers = small_class
    monkeypatch.delenv("MAILLAB_SECRET", raising=False)
    s01 = config.students[0]
    app = MaillabApp(
        data_dir=tmp_path / "tui-data",
        lessons_dirs=[config.lessons],
        remote_host="127.0.0.1",
        smtp_port=servers.port_of("SMTP"),
        pop3_port=servers.port_of("POP3"),
        login=s01.address,
    )
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, SecretScreen))
        await type_text(pilot, s01.secret)  # the prompt has the cursor: the student just types
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.login_secret == s01.secret)
        screen = await open_lesson(pilot, app, "class-exchange")
        variables = screen.run.variables
        assert (variables["user"], variables["secret"], variables["to"]) == (s01.address, s01.secret, s01.address)
        for line in ("EHLO laptop", f"AUTH PLAIN {plain(s01.address, s01.secret)}"):
            before = len(screen.console.session.history)
            await type_text(pilot, line)  # the lesson's command line has the cursor
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(screen.console.session.history) > before)
        await wait_for(pilot, lambda: "login" in screen.run.completed_steps())
        assert screen.console.session.authenticated
