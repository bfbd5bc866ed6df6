"""The Textual TUI driven with Pilot: lessons typed key by key against the embedded servers."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from simulator.course.patterns import RuntimeValues, render_solution
from simulator.engine.session import Expect
from simulator.tui.home_screen import HomeScreen
from simulator.tui.lesson_screen import LessonScreen
from simulator.tui.sandbox_screen import SandboxScreen
from simulator.tui.tools import ReferenceScreen, ToolsScreen
from tui_helpers import check_snapshot, make_app, open_by_keys, open_lesson, send_line, type_lines, type_text, wait_until_drawn
from waiting import wait_for

pytestmark = pytest.mark.timeout(120)


async def dig_in_another_terminal(server: tuple[str, int], qtype: str, name: str) -> str:
    """The learner's `dig` in a terminal beside the app (dnspython where dig is not installed)."""
    import asyncio
    import shutil

    host, port = server
    if shutil.which("dig"):
        process = await asyncio.create_subprocess_exec(
            "dig", f"@{host}", "-p", str(port), qtype, name, "+short", "+time=5", "+tries=1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, output
        return output.decode()
    from mockservers.world.dns import lookup

    return "\n".join(str(answer) for answer in await asyncio.to_thread(lookup, server, name, qtype))


async def tab_until(pilot, app, reached, key: str = "tab") -> None:
    """Press Tab until `reached(app.focused)`: the widget is on the Tab path."""
    for _ in range(15):
        if reached(app.focused):
            return
        await pilot.press(key)
    assert reached(app.focused), app.focused


async def solve_by_typing(pilot, screen: LessonScreen) -> None:
    """Type every step's reference solution, as a learner would, and check each step completes."""
    run = screen.run
    for step in screen.lesson.steps:
        if run.current is None or run.current.step is not step:
            continue
        for raw in step.solution:
            if raw.startswith("@connect"):
                target = raw.split()[1]
                if screen.console.protocol != target:  # the lesson may have switched by itself
                    await pilot.press("ctrl+o")
                await wait_for(pilot, lambda: screen.console.protocol == target)
                await wait_for(pilot, lambda: screen.console.session.greeting is not None)
                continue
            if raw.startswith("@dig"):
                _, qtype, name = raw.split()
                await dig_in_another_terminal(screen.endpoints.dns, qtype, name)
                continue
            if raw.startswith("@wait"):
                world = screen.app.lab.world
                if world is not None:  # a world lesson waits for its relays: every queue empty
                    await wait_for(pilot, lambda: not any(world.store(d).queued() for d in world.domains), timeout=30)
                else:
                    await pilot.pause(float(raw.split()[1]))  # the lesson's own wait (greylisting)
                continue
            if run.current is None or run.current.step is not step:
                break
            runtime = RuntimeValues(apop_timestamp=getattr(screen.console.session, "apop_timestamp", "") or "")
            await send_line(pilot, screen, render_solution(raw, run.variables, runtime))
        await wait_for(pilot, lambda: run.current is None or run.current.step is not step)


async def test_home_lists_tracks_and_lessons(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
        options = app.screen.query_one("#lessons")
        titles = [options.get_option_at_index(i).prompt for i in range(options.option_count)]
        assert any("First contact" in str(t) for t in titles)
        assert any("Say hello" in str(t) for t in titles)


async def test_complete_the_first_smtp_lesson_by_typing(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "smtp-hello")
        await solve_by_typing(pilot, screen)
        assert screen.run.finished
        assert "Lesson complete" in str(screen.query_one("#step-title").render())
        # progress is saved atomically as steps complete
        assert app.progress.is_complete(screen.lesson)
        lines = screen.console.transcript.plain_lines
        assert any(line.startswith("› EHLO") for line in lines) and any(line.startswith("‹ 250") for line in lines)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running)
    saved = (tmp_path / "data" / "progress.json").read_text()
    assert "smtp-hello" in saved
    assert list((tmp_path / "data" / "attempts").glob("smtp-hello-*.json"))


async def test_live_diagnostics_before_sending(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "smtp-hello")
        assert app.focused is screen.console.command
        await type_text(pilot, "EHOL x")
        await pilot.pause(0.1)
        shown = str(screen.console.query_one(".diagnostics").render())
        assert "EHLO" in shown and "✗" in shown
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(l.startswith("‹ 500") for l in screen.console.transcript.plain_lines))
        explanation = str(screen.query_one("#explain").render())
        assert "500" in explanation


async def test_auth_login_with_the_base64_tool(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "auth-login-base64")
        await send_line(pilot, screen, "helo sis")
        await send_line(pilot, screen, "auth login")
        assert screen.console.session.expecting == Expect.AUTH_RESPONSE
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen))
        tools = app.screen
        await tab_until(pilot, app, lambda widget: widget is tools.query_one("#b64-text"))
        await type_text(pilot, "learner@qq.com")
        await pilot.pause(0.1)
        assert str(tools.query_one("#b64-encoded").render()) == "bGVhcm5lckBxcS5jb20="
        await tab_until(pilot, app, lambda widget: widget is tools.query_one("#use-b64"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LessonScreen))
        assert screen.console.command.value == "bGVhcm5lckBxcS5jb20="
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("UGFzc3dvcmQ6" in l for l in screen.console.transcript.plain_lines))
        assert "› ***" in screen.console.transcript.plain_lines  # AUTH answers are never shown
        assert "bGVhcm5lckBxcS5jb20=" not in "\n".join(screen.console.transcript.plain_lines)
        explanation = str(screen.query_one("#explain").render())
        assert "Password:" in explanation


async def test_starttls_upgrades_the_same_connection(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, SandboxScreen) and bool(app.screen.query("#smtp-console")))
        screen = app.screen
        smtp = screen.query_one("#smtp-console")
        await wait_for(pilot, lambda: smtp.session is not None and smtp.session.greeting is not None)
        await send_line(pilot, screen, "EHLO learner.example", smtp)
        await send_line(pilot, screen, "STARTTLS", smtp)
        await wait_for(pilot, lambda: smtp.session.tls_active)
        assert any("TLS started" in line and "CN=" in line for line in smtp.transcript.plain_lines)
        await send_line(pilot, screen, "EHLO learner.example", smtp)
        assert not any("STARTTLS" in line for line in smtp.transcript.plain_lines[-12:])


async def test_data_mode_editor_with_a_dot_stuffed_line(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, SandboxScreen) and bool(app.screen.query("#smtp-console")))
        screen = app.screen
        smtp = screen.query_one("#smtp-console")
        await wait_for(pilot, lambda: smtp.session is not None and smtp.session.greeting is not None)
        for line in ("EHLO learner.example", "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>", "DATA"):
            await send_line(pilot, screen, line, smtp)
        assert smtp.session.expecting == Expect.MESSAGE
        from simulator.tui.dialogs import DataEditorScreen

        await pilot.press("ctrl+e")  # the sandbox's console opens the same editor as a lesson's
        await wait_for(pilot, lambda: isinstance(app.screen, DataEditorScreen))
        await type_lines(pilot, ["Subject: dots", "", ".a line that starts with a dot"])
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: smtp.session.messages_accepted == 1)
        store = app.lab.store
        (message,) = store.messages("bob@example.com")
        assert store.read("bob@example.com", message.uid).endswith(b"\r\n\r\n.a line that starts with a dot\r\n")


async def test_data_editor_screen_stuffs_dots(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "smtp-send-mail")
        variables = screen.run.variables
        for line in ("EHLO learner.example", f"MAIL FROM:<{variables['user']}>", f"RCPT TO:<{variables['to']}>", "DATA"):
            await send_line(pilot, screen, line)
        await pilot.press("ctrl+e")
        from simulator.tui.dialogs import DataEditorScreen

        await wait_for(pilot, lambda: isinstance(app.screen, DataEditorScreen))
        await type_lines(pilot, ["Subject: from the editor", "", ".hidden dot", "bye"])
        await wait_for(pilot, lambda: "dot-stuffing" in str(app.screen.query_one("#data-notes").render()))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.console.session.messages_accepted == 1)
        store = app.lab.store
        (message,) = store.messages(variables["to"])
        assert store.read(variables["to"], message.uid).endswith(b"\r\n\r\n.hidden dot\r\nbye\r\n")
        assert any("..hidden dot" in line for line in screen.console.transcript.plain_lines)


async def test_pop3_lesson_by_typing(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "pop3-login-retr")
        assert screen.console.protocol == "pop3"
        await solve_by_typing(pilot, screen)
        assert screen.run.finished


async def test_watch_mode_follows_an_external_session(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "smtp-hello")
        port = screen.endpoints.smtp
        await pilot.press("f6")
        from simulator.tui.dialogs import WatchScreen

        await wait_for(pilot, lambda: isinstance(app.screen, WatchScreen))
        assert f"telnet 127.0.0.1 {port}" in str(app.screen.query_one("#watch-commands").render())
        await pilot.press("escape")

        def telnet_session() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.recv(1024)
                sock.sendall(b"EHLO telnet.example\r\n")
                sock.recv(4096)

        await asyncio.to_thread(telnet_session)
        def external() -> list[str]:
            return [l for l in screen.console.transcript.plain_lines if l.startswith("[127.0.0.1:")]

        # The server's lines reach the app one by one: the reply may show a moment after the command.
        await wait_for(pilot, lambda: any("EHLO telnet.example" in l for l in external()) and any("‹ 250" in l for l in external()))
        assert any(event.sent == "EHLO telnet.example" for event in screen.run.events)  # the lesson's checks saw it


async def test_switching_to_chinese(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "smtp-hello")
        await pilot.press("ctrl+l")
        await pilot.pause(0.2)
        assert app.lang == "zh"
        assert screen.lesson.language == "zh"
        assert "步" in str(screen.query_one("#step-title").render())
        footer_keys = {active.binding.description for key, active in screen.active_bindings.items() if key == "f2"}
        assert footer_keys == {"提示"}
        await send_line(pilot, screen, "NOOP")
        assert "肯定" in str(screen.query_one("#explain").render()) or "成功" in str(screen.query_one("#explain").render())


async def test_reconnect_after_the_server_drops(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_lesson(pilot, app, "smtp-hello")
        await send_line(pilot, screen, "QUIT")
        await wait_for(pilot, lambda: not screen.console.conversation.connected)
        assert any("Connection closed" in l and "Ctrl+R" in l for l in screen.console.transcript.plain_lines)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.console.conversation.connected and screen.console.session.greeting is not None)
        await send_line(pilot, screen, "NOOP")
        replies = [l for l in screen.console.transcript.plain_lines if l.startswith("‹ ")]
        assert replies[-1].startswith("‹ 250")


async def test_server_down_is_explained(tmp_path):
    app = make_app(tmp_path, remote_host="127.0.0.1", smtp_port=1, pop3_port=1)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_by_keys(pilot, app, "smtp-hello")
        await wait_for(pilot, lambda: any("Cannot connect" in l for l in screen.console.transcript.plain_lines))


async def test_reference_is_searchable_in_both_languages(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, ReferenceScreen))
        await type_text(pilot, "550")
        await pilot.pause(0.1)
        assert "550" in str(app.screen.query_one("#reference-detail").render())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_snapshots(tmp_path, size):
    app = make_app(tmp_path)
    width, height = size
    async with app.run_test(size=size) as pilot:
        # The footer fills in its keys after the first paint: each shot waits until the screen is stable.
        check_snapshot(app, f"home-{width}x{height}", await wait_until_drawn(pilot, app))
        screen = await open_lesson(pilot, app, "smtp-hello")
        await send_line(pilot, screen, "EHLO learner.example")
        for field in app.screen.query("Input"):
            field.cursor_blink = False  # a blinking cursor makes two different pictures
        check_snapshot(app, f"lesson-{width}x{height}", await wait_until_drawn(pilot, app))
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ToolsScreen))
        check_snapshot(app, f"tools-{width}x{height}", await wait_until_drawn(pilot, app))


@pytest.mark.parametrize("lesson_id", ["mail-journey", "mime-by-hand", "bounce-dsn", "greylisting-queue", "spf-dkim-dmarc", "mx-lookup"])
async def test_world_lessons_can_be_completed_by_typing(tmp_path, lesson_id):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_lesson(pilot, app, lesson_id)
        assert app.lab.world is not None and len(app.lab.world.domains) == 4
        await solve_by_typing(pilot, screen)
        assert screen.run.finished


async def test_a_refusal_the_step_asks_for_is_shown_as_the_goal_not_a_warning(tmp_path):
    """reply-codes asks for `RCPT TO:<nobody@...>` and its 550: the checker's prediction is the step's goal."""
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_lesson(pilot, app, "reply-codes")
        await send_line(pilot, screen, "EHLO learner.example")
        await send_line(pilot, screen, "MAIL FROM:<alice@example.com>")
        await type_text(pilot, "RCPT TO:<nobody@example.com>")
        await pilot.pause(0.1)
        shown = str(screen.console.query_one(".diagnostics").render())
        assert "this step asks for this reply" in shown and "✗" not in shown
        for _ in "RCPT TO:<nobody@example.com>":
            await pilot.press("backspace")
        await type_text(pilot, "RCPT TO:<nobody@example.org>")
        await pilot.pause(0.1)
        other = str(screen.console.query_one(".diagnostics").render())
        assert "this step asks for this reply" not in other and "✗" in other  # relaying is refused: a real warning
