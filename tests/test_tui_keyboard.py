"""The app from the keyboard alone: every journey here uses only `pilot.press` (plus reading state).

Home -> first lesson -> complete it; the sandbox with the Gmail persona (send over SMTP, fetch over
POP3 on implicit TLS); the palette opening a lesson by name; every modal giving the focus back;
every key the footer shows doing something. At 80x24 and 120x40.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList, Select

from mailprotocol import codec as sasl
from simulator.course.patterns import RuntimeValues, render_solution
from simulator.engine.session import Expect
from simulator.tui.home_screen import HomeScreen
from simulator.tui.lesson_screen import LessonScreen
from simulator.tui.sandbox_screen import SandboxScreen
from tui_helpers import make_app
from waiting import wait_for

pytestmark = pytest.mark.timeout(180)

SIZES = [(80, 24), (120, 40)]


def keys_for(text: str) -> list[str]:
    """What pressing `text` on a keyboard sends, key by key."""
    names = {" ": "space", ".": "full_stop", ":": "colon", "<": "less_than_sign", ">": "greater_than_sign",
             "@": "at", "=": "equals_sign", "+": "plus", "/": "slash", "-": "minus", "_": "underscore",
             "[": "left_square_bracket", "]": "right_square_bracket", "!": "exclamation_mark"}
    return [names.get(ch, ch) for ch in text]


async def type_line(pilot, text: str) -> None:
    await pilot.press(*keys_for(text), "enter")


async def send_and_wait(pilot, console, lines: list[str]) -> None:
    """Type each line and wait for the server's answer to it."""
    for line in lines:
        session = console.session
        before = len(session.history)
        await type_line(pilot, line)
        await wait_for(pilot, lambda: len(session.history) > before)


async def wait_for_lesson(pilot, app) -> LessonScreen:
    """The lesson screen once its console has the server's greeting."""
    await wait_for(pilot, lambda: isinstance(app.screen, LessonScreen) and app.screen.run is not None)
    screen = app.screen
    await wait_for(pilot, lambda: screen.console.session.greeting is not None)
    return screen


async def tab_to(pilot, app, reached, key: str = "tab") -> None:
    """Press Tab (or Shift+Tab) until `reached(app.focused)`: every pane is on the Tab path."""
    for _ in range(10):
        if reached(app.focused):
            return
        await pilot.press(key)
    assert reached(app.focused), app.focused


async def wait_quiet(pilot) -> None:
    """Let pending messages and network replies settle."""
    await pilot.pause(0.2)


async def solve_by_keys(pilot, app, screen: LessonScreen) -> None:
    run = screen.run
    for step in screen.lesson.steps:
        if run.current is None or run.current.step is not step:
            continue
        for raw in step.solution:
            if raw.startswith("@connect"):
                if screen.console.protocol != raw.split()[1]:
                    await pilot.press("ctrl+o")
                await wait_for(pilot, lambda: screen.console.protocol == raw.split()[1])
                await wait_for(pilot, lambda: screen.console.session.greeting is not None)
                continue
            if run.current is None or run.current.step is not step:
                break
            assert isinstance(app.focused, Input), "the command line has the focus"
            session = screen.console.session
            before = len(session.history)
            runtime = RuntimeValues(apop_timestamp=getattr(screen.console.session, "apop_timestamp", "") or "")
            line = render_solution(raw, run.variables, runtime)
            expecting_data = screen.console.session.expecting in (Expect.MESSAGE, Expect.OCTETS)
            await type_line(pilot, line)
            if not expecting_data or line == ".":
                await wait_for(pilot, lambda: len(session.history) > before or session.closed)
        await wait_for(pilot, lambda: run.current is None or run.current.step is not step)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_home_enter_opens_the_first_lesson_and_it_can_be_completed(tmp_path, size):
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await wait_quiet(pilot)
        assert isinstance(app.screen, HomeScreen)
        options = app.screen.query_one(OptionList)
        first = next(options.get_option_at_index(i).id for i in range(options.option_count) if options.get_option_at_index(i).id)
        await pilot.press("enter")
        screen = await wait_for_lesson(pilot, app)
        assert screen.lesson.id == first
        assert app.focused is screen.console.command  # entering a lesson puts the cursor in its command line
        await solve_by_keys(pilot, app, screen)
        assert screen.run.finished
        assert app.progress.is_complete(screen.lesson)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: not app.is_running)
    assert first in (tmp_path / "data" / "progress.json").read_text()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_sandbox_gmail_send_over_smtp_fetch_over_pop3_implicit_tls(tmp_path, size):
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await wait_quiet(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, SandboxScreen) and app.screen.endpoints is not None)
        sandbox = app.screen
        smtp, pop3 = sandbox.query_one("#smtp-console"), sandbox.query_one("#pop3-console")
        await wait_for(pilot, lambda: smtp.session is not None and smtp.session.greeting is not None)
        assert app.focused is smtp.command
        # The persona selector is reached with Shift+Tab and worked with arrows and Enter.
        await tab_to(pilot, app, lambda widget: isinstance(widget, Select), "shift+tab")
        await pilot.press("enter")
        await wait_quiet(pilot)
        await pilot.press(*keys_for("gmail"))  # the open list jumps to what is typed
        await pilot.press("enter")
        await wait_for(pilot, lambda: sandbox.persona == "gmail" and sandbox.profile.name == "gmail")
        await wait_for(pilot, lambda: smtp.session is not None and smtp.session.greeting is not None)
        # Back to the SMTP command line, switch it to implicit TLS, send a message.
        await tab_to(pilot, app, lambda widget: widget is smtp.command)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: smtp.conversation is not None and smtp.conversation.connected and smtp.session.tls_active and smtp.session.greeting is not None)
        plain = "AUTH PLAIN " + sasl.plain_payload("learner@gmail.com", "abcdefghijklmnop")
        await send_and_wait(pilot, smtp, ["EHLO learner.example", plain, "MAIL FROM:<learner@gmail.com>", "RCPT TO:<friend@gmail.com>", "DATA"])
        assert smtp.session.expecting == Expect.MESSAGE
        for line in ["Subject: keyboard only", "", "sent with keys", "."]:
            await type_line(pilot, line)
        await wait_for(pilot, lambda: any(l.startswith("‹ 250") and "queued" in l.lower() or "ok" in l.lower() for l in smtp.transcript.plain_lines[-2:]))
        assert "AGxlYXJuZXJAZ21haWwuY29tAGFiY2RlZmdoaWprbG1ub3A=" not in "\n".join(smtp.transcript.plain_lines)  # masked
        # Tab to the POP3 command line, implicit TLS, fetch the message.
        await tab_to(pilot, app, lambda widget: widget is pop3.command)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: pop3.conversation is not None and pop3.conversation.connected and pop3.session.tls_active and pop3.session.greeting is not None)
        assert any("smtp.gmail.com" in line for line in pop3.transcript.plain_lines), pop3.transcript.plain_lines
        await send_and_wait(pilot, pop3, ["USER friend@gmail.com", "PASS qrstuvwxyzabcdef", "STAT", "RETR 1"])
        text = "\n".join(pop3.transcript.plain_lines)
        assert "Subject: keyboard only" in text and "sent with keys" in text
        assert "PASS ***" in text and "qrstuvwxyzabcdef" not in text
        accounts = sandbox.query_one("#accounts")
        assert "qrstuvwxyzabcdef" not in str(accounts.render())
        await pilot.press("f8")  # teaching: show the secrets, in the transcripts and the account list
        await wait_quiet(pilot)
        shown = "\n".join(pop3.transcript.plain_lines + smtp.transcript.plain_lines)
        assert "PASS qrstuvwxyzabcdef" in shown and plain in shown
        assert "qrstuvwxyzabcdef" in str(accounts.render())
        await pilot.press("f8")
        await wait_quiet(pilot)
        assert "qrstuvwxyzabcdef" not in "\n".join(pop3.transcript.plain_lines) + str(accounts.render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_palette_opens_a_lesson_by_name(tmp_path, size):
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await wait_quiet(pilot)
        await pilot.press("ctrl+p")
        await wait_quiet(pilot)
        await pilot.press(*keys_for("RSET: start the message over"))
        await wait_quiet(pilot)
        await pilot.press("enter")
        assert "RSET" in (await wait_for_lesson(pilot, app)).lesson.title
        assert app.focused is app.screen.console.command


async def test_palette_puts_the_lesson_whose_whole_id_was_typed_first(tmp_path):
    """`reply-codes` opens reply-codes, not reply-codes-qq, which the fuzzy match scores higher."""
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)
        screen = await open_by_palette(pilot, app, "reply-codes")
        assert screen.lesson.id == "reply-codes"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_modal_closes_with_the_focus_where_it_was(tmp_path, size):
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await wait_quiet(pilot)
        await pilot.press("enter")
        lesson = await wait_for_lesson(pilot, app)
        command = lesson.console.command
        for key in ["f1", "f3", "f4", "f6", "ctrl+p"]:
            assert app.focused is command
            await pilot.press(key)
            await wait_for(pilot, lambda: app.screen is not lesson)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is lesson)
            await wait_quiet(pilot)
            assert app.focused is command, key
        # The DATA editor (Ctrl+E after 354): Esc closes it too, although the text area has the focus.
        await send_and_wait(pilot, lesson.console, ["EHLO x", "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>", "DATA"])
        if lesson.console.session.expecting == Expect.MESSAGE:
            await pilot.press("ctrl+e")
            await wait_for(pilot, lambda: app.screen is not lesson)
            await pilot.press(*keys_for("hello"))
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is lesson)
            await wait_quiet(pilot)
            assert app.focused is command


def screen_text(app) -> str:
    return app.export_screenshot()


async def settle(pilot, app) -> str:
    """The screen once it stops changing (replies arriving, toasts appearing)."""
    previous = None
    for _ in range(40):
        await pilot.pause(0.1)
        current = screen_text(app)
        if current == previous:
            return current
        previous = current
    return previous or ""


def footer_keys(screen) -> list[str]:
    """The keys the footer shows as working on `screen` (Textual's public active_bindings)."""
    return [key for key, active in screen.active_bindings.items() if active.binding.show and active.enabled]


async def test_every_key_the_footer_shows_does_something(tmp_path):
    app = make_app(tmp_path)
    checked: dict[str, list[str]] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)

        async def walk(name: str, screen, leave_key: str) -> None:
            keys = footer_keys(screen)
            assert keys, name
            checked[name] = keys
            for key in keys:
                if key in (leave_key, "ctrl+q"):
                    continue
                before = await settle(pilot, app)
                theme, lang, stack, focused = app.theme, app.lang, len(app.screen_stack), app.focused
                await pilot.press(key)
                after = await settle(pilot, app)
                assert after != before, f"{name}: {key} changed nothing on screen"
                if len(app.screen_stack) > stack:  # a modal or a new screen: back with Esc
                    await pilot.press("escape")
                    await wait_for(pilot, lambda: app.screen is screen)
                elif app.focused is not focused:  # a prompt opened on the screen (a folder): Esc closes it
                    await pilot.press("escape")
                    await wait_for(pilot, lambda: app.focused is focused)
                if app.lang != lang:
                    await pilot.press("ctrl+l")
                if app.theme != theme:
                    await pilot.press("ctrl+t")
                assert app.screen is screen, f"{name}: {key}"

        await walk("home", app.screen, "f5")
        await pilot.press("enter")
        lesson = await wait_for_lesson(pilot, app)
        await walk("lesson", lesson, "escape")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, SandboxScreen) and app.screen.endpoints is not None)
        sandbox = app.screen
        await wait_for(pilot, lambda: sandbox.query_one("#smtp-console").session.greeting is not None)
        await walk("sandbox", sandbox, "escape")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))
    for name in ("home", "lesson", "sandbox"):
        assert "f1" in checked[name] and "ctrl+l" in checked[name], checked  # app-wide keys on every screen


async def open_by_palette(pilot, app, lesson_id: str) -> LessonScreen:
    await pilot.press("ctrl+p")
    await wait_quiet(pilot)
    await pilot.press(*keys_for(lesson_id))
    await wait_quiet(pilot)
    await pilot.press("enter")
    return await wait_for_lesson(pilot, app)


def talk(port: int, lines: list[bytes], *, until: bytes) -> bytes:
    """An outside client (telnet in another terminal): send each line, read until `until` shows."""
    import socket

    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        received += sock.recv(4096)
        for line in lines:
            sock.sendall(line)
        while until not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


async def test_watch_mode_explains_a_pop3_body_from_another_terminal(tmp_path):
    import asyncio

    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)
        screen = await open_by_palette(pilot, app, "pop3-login-retr")
        if screen.console.protocol != "pop3":
            await pilot.press("ctrl+o")
        port, variables = screen.endpoints.pop3, screen.run.variables
        lines = [f"USER {variables['user']}\r\n".encode(), f"PASS {variables['secret']}\r\n".encode(), b"RETR 1\r\n", b"QUIT\r\n"]
        received = await asyncio.to_thread(talk, port, lines, until=b"\r\n.\r\n")
        body = received.split(b"\r\n")
        subject = next(line.decode() for line in body if line.lower().startswith(b"subject:"))
        await wait_for(pilot, lambda: any(subject in line for line in screen.console.transcript.plain_lines))
        # The server's lines reach the app one by one: the body's closing dot may come a moment later.
        await wait_for(pilot, lambda: any(
            line.startswith("[127.0.0.1:") and line.endswith("┆ .") or line.endswith("‹ .") for line in screen.console.transcript.plain_lines
        ))
        shown = screen.console.transcript.plain_lines
        assert "PASS ***" in "\n".join(shown) and variables["secret"] not in "\n".join(shown)


async def test_watch_mode_says_why_a_bare_lf_dot_does_not_end_data(tmp_path):
    import asyncio

    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)
        screen = await open_by_palette(pilot, app, "smtp-hello")
        port = screen.endpoints.smtp
        lines = [b"EHLO nc.example\r\n", b"MAIL FROM:<alice@example.com>\r\n", b"RCPT TO:<bob@example.com>\r\n", b"DATA\r\n",
                 b"Subject: bare\n\nsent by a terminal without CR\n.\n"]
        await asyncio.to_thread(talk, port, lines, until=b"354")
        await wait_for(pilot, lambda: any("bare LF" in line for line in screen.console.transcript.plain_lines))


def connect(port: int) -> "socket.socket":
    """An outside client that stays open (a telnet window): connected, greeting read."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    read_until(sock, b"\r\n")
    return sock


def read_until(sock, until: bytes) -> bytes:
    received = b""
    while until not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


async def test_watch_mode_follows_the_new_session_after_a_reconnect(tmp_path):
    """The learner's telnet hangs up and connects again: the lesson follows the new session (the
    transcript says so), a session that speaks again gets its own state back, and a line typed in
    the app's console is checked on the console's own connection."""
    import asyncio

    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)
        screen = await open_by_palette(pilot, app, "smtp-hello")
        port, run = screen.endpoints.smtp, screen.run
        lines = lambda: screen.console.transcript.plain_lines  # noqa: E731

        async def say(sock, line: bytes, until: bytes = b"\r\n") -> None:
            sock.sendall(line)
            await asyncio.to_thread(read_until, sock, until)

        first = await asyncio.to_thread(connect, port)
        await say(first, b"EHLO first.example\r\n", b"250 ")
        await wait_for(pilot, lambda: run.session.helo_domain == "first.example")
        first.close()  # hangs up without QUIT, as a closed terminal window does
        await wait_for(pilot, lambda: any("ended" in line for line in lines()), what="the end of the first session")
        assert run.session.closed

        second = await asyncio.to_thread(connect, port)
        await say(second, b"HELO second.example\r\n")
        await wait_for(pilot, lambda: run.session.helo_domain == "second.example")
        marks = [line for line in lines() if line.startswith("— External session")]
        assert len(marks) == 3 and marks[0].endswith("follows it") and marks[1].endswith("ended"), marks
        assert marks[0].split()[3] != marks[2].split()[3]  # the new session's own peer
        assert not run.session.closed and not run.session.esmtp  # the new session's own state
        explained = str(screen.query_one("#explain").render())
        assert "HELO second.example" in explained, explained

        # Two terminals at once: each keeps its state while the other speaks.
        third = await asyncio.to_thread(connect, port)
        await say(third, b"EHLO third.example\r\n", b"250 ")
        await wait_for(pilot, lambda: run.session.helo_domain == "third.example")
        await say(second, b"NOOP\r\n")
        await wait_for(pilot, lambda: run.session.helo_domain == "second.example" and len(run.session.history) == 3)
        assert "noop" in run.completed_steps()

        # The app's own console speaks again: its line is checked on its own connection.
        await type_line(pilot, "HELO app.example")
        await wait_for(pilot, lambda: run.session is screen.console.session and run.session.helo_domain == "app.example")
        for sock in (second, third):
            sock.close()
        await wait_for(pilot, lambda: sum("ended" in line for line in lines()) == 3)
        assert not run.session.closed  # the console's connection is still open


async def test_long_code_lines_are_reached_by_keys_at_80x24(tmp_path):
    """A code block wider than the prose pane scrolls sideways with Right/Left on the focused pane."""
    from textual.widgets.markdown import MarkdownFence

    from simulator.tui.widgets import ProsePane

    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_quiet(pilot)
        await pilot.press("enter")
        screen = await wait_for_lesson(pilot, app)
        await tab_to(pilot, app, lambda widget: isinstance(widget, ProsePane), key="shift+tab")
        pane = app.focused
        await wait_for(pilot, lambda: any(fence.max_scroll_x > 0 for fence in pane.query(MarkdownFence)))
        wide = next(fence for fence in pane.query(MarkdownFence) if fence.max_scroll_x > 0)
        assert wide.scroll_x == 0
        await pilot.press("right", "right")
        await wait_for(pilot, lambda: wide.scroll_x > 0)
        await pilot.press("left", "left")
        await wait_for(pilot, lambda: wide.scroll_x == 0)
        assert screen.lesson is not None


async def test_a_password_typed_in_the_wrong_field_is_hidden_in_the_panes_too(tmp_path):
    """USER <password> (and its echo in a reply) is masked like PASS; F8 shows it, F8 hides it."""
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, SandboxScreen) and app.screen.endpoints is not None)
        sandbox = app.screen
        pop3 = sandbox.query_one("#pop3-console")
        await wait_for(pilot, lambda: pop3.session is not None and pop3.session.greeting is not None)
        secret = sandbox.profile.accounts[0].secret
        await tab_to(pilot, app, lambda widget: widget is pop3.command)
        await send_and_wait(pilot, pop3, [f"USER {secret}", f"MAIL FROM:<{secret}@example.com>"])
        masked = "\n".join(pop3.transcript.plain_lines)
        assert secret not in masked and "USER ***" in masked, masked
        await pilot.press("f8")
        await wait_for(pilot, lambda: f"USER {secret}" in "\n".join(pop3.transcript.plain_lines))
        await pilot.press("f8")
        await wait_for(pilot, lambda: secret not in "\n".join(pop3.transcript.plain_lines))


async def test_client_settings_lesson_with_the_real_python_clients_and_what_f6_shows(tmp_path):
    """The learner's journey: F6 for the ports and the CA, then smtplib.SMTP_SSL and
    poplib.POP3_SSL in another terminal (threads here); each step completes by itself."""
    import asyncio
    import poplib
    import re
    import smtplib
    import ssl

    from simulator.tui.dialogs import WatchScreen

    app = make_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_quiet(pilot)
        screen = await open_by_palette(pilot, app, "client-settings")
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, WatchScreen))
        shown = str(app.screen.query_one("#watch-commands").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        implicit = re.findall(r"openssl s_client -crlf -quiet -CAfile (\S+) -connect 127\.0\.0\.1:(\d+)", shown)
        assert len(implicit) == 2, shown  # SMTPS first, POP3S second, as the lesson says
        (ca_file, smtps), (_, pop3s) = implicit

        def send() -> None:
            context = ssl.create_default_context(cafile=ca_file)
            with smtplib.SMTP_SSL("127.0.0.1", int(smtps), context=context, timeout=20) as smtp:
                smtp.login("alice@qq.lab", "abcdefghijklmnop")
                smtp.sendmail("alice@qq.lab", ["carol@163.lab"], b"From: alice@qq.lab\r\nTo: carol@163.lab\r\nSubject: settings\r\n\r\nHi Carol\r\n")

        await asyncio.to_thread(send)
        await wait_for(pilot, lambda: screen.run.current is not None and screen.run.current.step.id == "fetch", timeout=30)

        def fetch() -> bytes:
            context = ssl.create_default_context(cafile=ca_file)
            pop = poplib.POP3_SSL("127.0.0.1", int(pop3s), context=context, timeout=20)
            try:
                pop.user("carol@163.lab")
                pop.pass_("carol-authcode")
                return b"\r\n".join(pop.retr(1)[1])
            finally:
                pop.quit()

        message = await asyncio.to_thread(fetch)
        assert b"with ESMTPSA id " in message and b"Subject: settings" in message
        await wait_for(pilot, lambda: screen.run.finished, timeout=30)
