"""Interactive replies are handed to the kernel in the turn that wrote them; floods wait their turn."""

from __future__ import annotations

from twisted.internet.interfaces import IWriteDescriptor
from zope.interface import implementer

from mockservers.session import SEND_NOW_LIMIT
from tests.fakes import TLSStringTransport, pop3, smtp


@implementer(IWriteDescriptor)
class SocketLikeTransport(TLSStringTransport):
    """Records each doWrite (the reactor's 'socket writable' call) with the octets buffered then."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[int] = []

    def doWrite(self) -> None:  # noqa: N802
        self.flushes.append(len(self.value()))

    def fileno(self) -> int:
        return -1


def test_each_reply_of_a_waiting_client_leaves_in_its_own_turn(tmp_path):
    transport = SocketLikeTransport()
    session = smtp(tmp_path, transport=transport)
    assert len(transport.flushes) == 1  # the greeting
    for line in ("EHLO student", "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>", "DATA"):
        before = len(transport.flushes)
        assert session.send(line)
        assert len(transport.flushes) == before + 1
    before = len(transport.flushes)
    assert session.raw(b"Subject: hi\r\n\r\nhello\r\n.\r\n")[-1].startswith("250")
    assert len(transport.flushes) == before + 1  # the 250 after the message was stored


def test_a_flood_of_replies_is_left_to_the_reactor(tmp_path):
    transport = SocketLikeTransport()
    session = smtp(tmp_path, transport=transport)
    before = len(transport.flushes)
    replies = session.raw(b"NOOP\r\n" * 4000)
    assert len("\r\n".join(replies)) > SEND_NOW_LIMIT
    assert len(transport.flushes) == before


def test_nothing_is_pushed_once_the_session_closes(tmp_path):
    transport = SocketLikeTransport()
    session = pop3(tmp_path, transport=transport)
    before = len(transport.flushes)
    assert session.send("QUIT")[0].startswith("+OK")
    assert transport.disconnecting and len(transport.flushes) == before


def test_not_over_tls(tmp_path):
    transport = SocketLikeTransport()
    session = smtp(tmp_path, transport=transport, implicit_tls=True)
    assert session.send("EHLO student")
    assert transport.flushes == []
