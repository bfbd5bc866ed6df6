"""The message inspector: the parsing it shows (bounded) and the keyboard-only journey through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mockservers.store import MailStore
from simulator.engine import message_view
from simulator.engine.mail_sources import find_sources
from simulator.engine.message_view import decode_part, parse_received, view_message
from simulator.tui.inspector_screen import InspectorScreen
from tui_helpers import make_app
from waiting import wait_for

SAMPLE = Path(__file__).with_name("mail") / "gbk-mixed.eml"

pytestmark = pytest.mark.timeout(60)


def test_a_received_line_gives_hop_protocol_tls_and_date() -> None:
    hop = parse_received("from smtp.qq.lab (127.0.0.2)\r\n\tby mx.sina.lab (maillab sina) with ESMTPS\r\n\tfor <b@sina.lab>; Fri, 04 Dec 2026 17:45:57 +0000")
    assert (hop.sender, hop.receiver, hop.protocol, hop.tls, hop.authenticated) == ("smtp.qq.lab (127.0.0.2)", "mx.sina.lab", "ESMTPS", True, False)
    assert hop.date == "Fri, 04 Dec 2026 17:45:57 +0000"
    plain = parse_received("from pc (127.0.0.1) by smtp.qq.lab with ESMTPA; Fri, 04 Dec 2026 17:45:55 +0000")
    assert (plain.tls, plain.authenticated) == (False, True)


def test_view_decodes_gbk_subject_parts_and_an_rfc2231_attachment_name() -> None:
    view = view_message(SAMPLE.read_bytes())
    assert view.subject == "你好，世界"
    assert [h.receiver for h in view.hops] == ["smtp.qq.lab", "mx.sina.lab"]
    assert ("dkim", "pass header.d=qq.lab") in view.auth_results
    shape = [(p.path, p.content_type, p.charset, p.encoding, p.filename) for p in view.parts]
    assert shape == [
        ("", "multipart/mixed", "", "7bit", ""),
        ("1", "multipart/alternative", "", "7bit", ""),
        ("1.1", "text/plain", "gbk", "base64", ""),
        ("1.2", "text/plain", "utf-8", "quoted-printable", ""),
        ("2", "application/pdf", "", "base64", "报告.pdf"),
    ]
    assert decode_part(view.parts[2]) == "这是用 GBK 编码的正文。\n"
    assert decode_part(view.parts[3]).startswith("UTF-8 正文: café")
    assert decode_part(view.parts[4]) == "[application/pdf 报告.pdf: 20 octets]"


def test_parsing_is_bounded_in_size_parts_and_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    nested = b"Content-Type: text/plain\r\n\r\nbottom\r\n"
    for level in range(40):
        nested = f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode() + nested + f"\r\n--b{level}--\r\n".encode()
    view = view_message(b"Subject: deep\r\n" + nested)
    assert view.parts_truncated and len(view.parts) == message_view.MAX_DEPTH + 1
    many = b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n' + b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n" * 500 + b"--x--\r\n"
    view = view_message(many)
    assert view.parts_truncated and len(view.parts) == message_view.MAX_PARTS
    monkeypatch.setattr(message_view, "MAX_BYTES", 1000)
    view = view_message(b"Subject: big\r\n\r\n" + b"x" * 5000)
    assert view.truncated and len(view.raw) == 1000


def _store_sample(data_dir: Path) -> None:
    MailStore(data_dir / "world" / "default" / "sina.lab").deliver(["bob@sina.lab"], SAMPLE.read_bytes())


def test_mail_sources_are_found_under_the_data_directory(tmp_path: Path) -> None:
    _store_sample(tmp_path / "data")
    assert [s.label for s in find_sources(tmp_path / "data")] == ["world/default/sina.lab"]


def _text(screen: InspectorScreen, selector: str) -> str:
    return str(screen.query_one(selector).render())


async def test_inspector_by_keyboard_mailbox_message_mime_tree_raw_source(tmp_path: Path) -> None:
    _store_sample(tmp_path / "data")
    app = make_app(tmp_path)
    async with app.run_test(size=(140, 50)) as pilot:
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen))
        screen = app.screen
        assert "world/default/sina.lab" in str(screen.query_one("#inspector-list").render_line(0))
        await pilot.press("enter")  # the server
        await wait_for(pilot, lambda: screen.source is not None)
        await pilot.press("enter")  # its mailbox
        await wait_for(pilot, lambda: screen.address == "bob@sina.lab")
        await pilot.press("enter")  # the message
        await wait_for(pilot, lambda: screen.view is not None)
        summary = _text(screen, "#inspector-summary")
        assert "Subject: 你好，世界" in summary
        assert "1. learner-pc (127.0.0.1) → smtp.qq.lab · ESMTPA · no TLS" in summary
        assert "2. smtp.qq.lab (127.0.0.2) → mx.sina.lab · ESMTPS · TLS" in summary
        assert "spf=pass smtp.mailfrom=alice@qq.lab" in summary
        assert "multipart/mixed" in _text(screen, "#part-view")
        await pilot.press("down")
        assert "Part 1: multipart/alternative" in _text(screen, "#part-view")
        await pilot.press("down")
        assert "这是用 GBK 编码的正文。" in _text(screen, "#part-view")
        await pilot.press("down")
        assert "UTF-8 正文: café" in _text(screen, "#part-view")
        await pilot.press("down")
        assert "[application/pdf 报告.pdf: 20 octets]" in _text(screen, "#part-view")
        assert screen.query_one("#raw-scroll").has_class("hidden")
        await pilot.press("r")
        assert not screen.query_one("#raw-scroll").has_class("hidden")
        assert "Subject: =?GBK?B?" in _text(screen, "#raw-view")
        await pilot.press("escape")  # back to the messages
        await wait_for(pilot, lambda: screen.view is None and screen.address is not None)
        await pilot.press("escape", "escape", "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, InspectorScreen))


async def test_inspector_speaks_chinese(tmp_path: Path) -> None:
    _store_sample(tmp_path / "data")
    app = make_app(tmp_path, lang="zh")
    async with app.run_test(size=(140, 50)) as pilot:
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, InspectorScreen))
        screen = app.screen
        await pilot.press("enter", "enter", "enter")
        await wait_for(pilot, lambda: screen.view is not None)
        summary = _text(screen, "#inspector-summary")
        assert "投递路线" in summary and "未加密" in summary and "已加密 (TLS)" in summary
        assert "发件人验证结果" in summary
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: "Journey" in _text(screen, "#inspector-summary"))
