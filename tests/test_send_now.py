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


def test_over_a_real_socket_replies_go_straight_out_and_a_flood_still_arrives_in_order(tmp_path):
    """Interactive replies are sent on the socket itself (the transport is never given output);
    a pipelined flood and a message read after it fall back to the transport, in order."""
    from tests.live import LineClient, persona, serving
    from tests.test_hardening_sockets import in_reactor, session_by_port

    with serving(persona("rfc"), tmp_path) as servers, LineClient(servers.port_of("SMTP"), timeout=10) as client:
        assert client.smtp_reply()[0].startswith("220")
        assert client.smtp("EHLO student")[-1].startswith("250")
        assert client.smtp("NOOP")[0].startswith("250")
        session = session_by_port(servers, client.sock.getsockname()[1])
        assert in_reactor(servers, lambda: session._buffered) is False  # nothing went through the transport
        client.send(b"".join(b"VRFY u%d\r\n" % n for n in range(1500)) + b"NOOP\r\n")
        replies = [client.smtp_reply()[0] for _ in range(1501)]
        assert all(reply.startswith("252") for reply in replies[:-1]) and replies[-1].startswith("250")
        assert in_reactor(servers, lambda: session._buffered) is True  # the flood went through the transport
        assert client.smtp("QUIT")[0].startswith("221")
