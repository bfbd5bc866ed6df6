"""Slow and hostile clients over real loopback sockets (embedded servers, tests/live.py).

Each test pairs one misbehaving client with a well-behaved one that must keep getting prompt
answers, and measures what the server holds for the bad one (its Twisted write buffer, its held
input, the message data of its transaction) from inside the reactor thread:

* byte-at-a-time senders;
* a client that pipelines commands and never reads its replies (SMTP NOOPs, POP3 RETRs of a large
  message): the session stops running commands once Twisted's write buffer passes 64 KiB, stops
  reading once MAX_HELD_INPUT is held, and the idle timeout plus CLOSE_DRAIN_GRACE end it;
* connection floods past `max_connections` / `max_connections_per_client`;
* 10 MB lines, as a command and inside DATA;
* half-closed sockets (shutdown(SHUT_WR) after the commands): every reply arrives, then EOF;
* idle timeouts per persona.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any, Callable

import pytest
from twisted.internet.threads import blockingCallFromThread

import mockservers.session as session_module
from live import LineClient, persona, serving
from mockservers.session import MAX_HELD_INPUT
from mockservers.tls import client_ssl_context
from waiting import wait_until

WRITE_BUFFER = 65536  # Twisted's FileDescriptor.bufferSize: the producer is paused above it


def in_reactor(servers: Any, function: Callable[[], Any]) -> Any:
    return blockingCallFromThread(servers.reactor, function)


def sessions_of(servers: Any) -> list[Any]:
    return in_reactor(servers, lambda: list(servers.servers.context.sessions))


def session_by_port(servers: Any, client_port: int) -> Any:
    def find() -> Any:
        for session in servers.servers.context.sessions:
            if session.peer.endswith(f":{client_port}"):
                return session
        return None

    return in_reactor(servers, find)


def held_by(servers: Any, session: Any) -> dict[str, int]:
    """What the server holds for one session: output not yet sent, input not yet handled."""

    def measure() -> dict[str, int]:
        transport = session.transport
        output = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
        output += getattr(transport, "_tempDataLen", 0)
        envelope = getattr(session, "envelope", None)
        return {
            "output": output,
            "input": len(session._pending) - session._pos,
            "message": sum(len(c) for c in envelope.chunks) if envelope is not None else 0,
            "reading_paused": int(getattr(session, "_paused_transport", 0)),
            "output_blocked": int(getattr(session, "_output_blocked", 0)),
        }

    return in_reactor(servers, measure)


class Prober(threading.Thread):
    """A well-behaved client sending NOOP in a loop; records each round trip."""

    def __init__(self, port: int, protocol: str = "SMTP") -> None:
        super().__init__(daemon=True)
        self.port = port
        self.protocol = protocol
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with LineClient(self.port, timeout=10) as client:
                if self.protocol == "SMTP":
                    client.smtp_reply()
                    client.smtp("EHLO probe.example")
                else:
                    client.pop3_reply()
                while not self._stop_event.is_set():
                    start = time.perf_counter()
                    reply = client.smtp("NOOP") if self.protocol == "SMTP" else client.pop3("NOOP")
                    self.latencies.append(time.perf_counter() - start)
                    if not reply[0][:1] in ("2", "+", "-"):
                        self.errors.append(f"odd reply {reply}")
                    time.sleep(0.02)  # pacing, not a wait: a polite client's NOOP rate while the other one misbehaves
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(error))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)

    def check(self) -> None:
        assert not self.errors, self.errors
        assert self.latencies, "the probe got no answer at all"
        assert max(self.latencies) < 2.0, f"a NOOP took {max(self.latencies):.2f} s"


@contextlib.contextmanager
def probing(port: int, protocol: str = "SMTP"):
    prober = Prober(port, protocol)
    prober.start()
    try:
        yield prober
    finally:
        prober.stop()
    prober.check()


def raw_socket(port: int, *, rcvbuf: int | None = None, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def read_lines(sock: socket.socket, count: int) -> bytes:
    """Read until `count` CRLF-ended lines have arrived (replies the test waits for)."""
    sock.settimeout(10)
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def push_without_reading(sock: socket.socket, payload: bytes, seconds: float) -> int:
    """Send `payload` over and over for `seconds` without ever reading; returns octets accepted."""
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + seconds
    view = memoryview(payload)
    offset = 0
    while time.monotonic() < deadline:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            select.select([], [sock], [], max(0.0, deadline - time.monotonic()))  # until the kernel takes more
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += n
        offset = (offset + n) % len(payload)
    return sent


# --- byte at a time --------------------------------------------------------------------------------


def test_byte_at_a_time_smtp_transaction_while_others_are_served(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        port = servers.port_of("SMTP")
        with probing(port):
            sock = raw_socket(port)
            assert sock.recv(1024).startswith(b"220")
            script = (
                b"EHLO slow.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
                b"Subject: drip\r\n\r\none byte per segment\r\n.\r\nQUIT\r\n"
            )
            for byte in script:
                sock.send(bytes([byte]))
                time.sleep(0.001)  # the attack itself: one byte per TCP segment, paced
            replies = read_until_eof(sock)
            sock.close()
        codes = [line[:4] for line in replies.split(b"\r\n") if line and line[3:4] == b" "]
        assert codes == [b"250 ", b"250 ", b"250 ", b"354 ", b"250 ", b"221 "], replies
        messages = servers.servers.store.messages("bob@example.com")
        assert len(messages) == 1
        assert servers.servers.store.read("bob@example.com", messages[0].uid).endswith(b"one byte per segment\r\n")


def test_byte_at_a_time_pop3(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        servers.servers.store.deliver(["bob@example.com"], b"Subject: x\r\n\r\n.dot\r\n")
        sock = raw_socket(servers.port_of("POP3"))
        assert sock.recv(1024).startswith(b"+OK")
        for byte in b"USER bob@example.com\r\nPASS bob-secret\r\nRETR 1\r\nQUIT\r\n":
            sock.send(bytes([byte]))
        replies = read_until_eof(sock)
        sock.close()
        assert b"..dot\r\n.\r\n" in replies and replies.endswith(b"\r\n") and replies.count(b"+OK") == 4, replies


# --- clients that never read ---------------------------------------------------------------------


def test_smtp_client_that_never_reads_is_throttled_then_timed_out(tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "CLOSE_DRAIN_GRACE", 1.0, raising=False)
    with serving(persona("rfc", smtp_idle_timeout=4), tmp_path) as servers:
        port = servers.port_of("SMTP")
        with probing(port):
            sock = raw_socket(port, rcvbuf=4096)
            client_port = sock.getsockname()[1]
            # 2.6 s of NOOPs that are never read: unthrottled, the replies would pile up without end.
            sent = push_without_reading(sock, b"NOOP\r\n" * 20000, 2.6)
            session = session_by_port(servers, client_port)
            assert session is not None
            held = held_by(servers, session)
            assert held["output_blocked"] == 1, held
            assert held["output"] <= WRITE_BUFFER + 4096, held
            assert held["input"] <= MAX_HELD_INPUT + 65536, held
            for _ in range(8):  # the kernel's socket buffers take what they can; the server stays bounded
                time.sleep(0.125)  # an observation window (1 s of samples), not a wait for an event
                held = held_by(servers, session)
                assert held["output"] <= WRITE_BUFFER + 4096 and held["input"] <= MAX_HELD_INPUT + 65536, held
            # What the client managed to push is bounded by socket buffers plus what the server holds.
            assert sent < 16 * 1024 * 1024, sent
            # Idle timeout (4 s without input being read), then the drain grace: the socket is aborted.
            wait_until(lambda: session_by_port(servers, client_port) is None, timeout=15, what="the non-reading session to be closed")
            sock.close()


def test_pop3_client_that_never_reads_its_retr_replies(tmp_path):
    body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 200  # 200 KB
    with serving(persona("rfc"), tmp_path) as servers:
        servers.servers.store.deliver(["bob@example.com"], body)
        port = servers.port_of("POP3")
        with probing(port, "POP3"):
            sock = raw_socket(port, rcvbuf=4096)
            client_port = sock.getsockname()[1]
            sock.sendall(b"USER bob@example.com\r\nPASS bob-secret\r\n")
            read_lines(sock, 3)  # greeting, USER, PASS: logged in before the flood
            # 5,000 RETRs (1 GB of replies) in one burst, never read.
            sent = push_without_reading(sock, b"RETR 1\r\n" * 5000, 2.0)
            session = session_by_port(servers, client_port)
            peak = {"output": 0, "input": 0}
            for _ in range(10):
                held = held_by(servers, session)
                for key in peak:
                    peak[key] = max(peak[key], held[key])
                time.sleep(0.1)  # an observation window (1 s of samples), not a wait for an event
            assert held["output_blocked"] == 1, held
            # One RETR's reply may be in the buffer when the producer pauses; never many.
            assert peak["output"] <= WRITE_BUFFER + 2 * len(body) + 4096, peak
            assert peak["input"] <= MAX_HELD_INPUT + 65536, peak
            assert sent < 16 * 1024 * 1024, sent  # socket buffers plus MAX_HELD_INPUT, not the flood
            sock.close()


def test_backpressure_releases_when_the_client_reads(tmp_path):
    """The same flood, read late: every reply arrives, complete and in order."""
    body = b"Subject: big\r\n\r\n" + (b"y" * 500 + b"\r\n") * 400
    with serving(persona("rfc"), tmp_path) as servers:
        servers.servers.store.deliver(["bob@example.com"], body)
        sock = raw_socket(servers.port_of("POP3"), rcvbuf=8192)
        client_port = sock.getsockname()[1]
        sock.sendall(b"USER bob@example.com\r\nPASS bob-secret\r\n" + b"RETR 1\r\n" * 40 + b"QUIT\r\n")
        session = wait_until(lambda: session_by_port(servers, client_port), what="the POP3 session")
        wait_until(lambda: held_by(servers, session)["output_blocked"], what="the server to fill its buffer and pause")
        data = read_until_eof(sock)
        sock.close()
        assert data.count(b"\r\n.\r\n") == 40
        assert data.count(b"+OK") == 1 + 2 + 40 + 1 and data.endswith(b"\r\n"), data[-200:]


def test_backpressure_over_tls(tmp_path):
    """A TLS transport pauses its producer during the handshake too: sessions must not stall."""
    body = b"Subject: tls\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1000  # 1 MB through TLS
    with serving(persona("rfc"), tmp_path, pop3s_port=0) as servers:
        servers.servers.store.deliver(["bob@example.com"], body)
        context = client_ssl_context(servers.servers.tls_files.ca_cert)
        with LineClient(servers.port_of("POP3S"), tls_context=context, timeout=20) as client:
            client.pop3_reply()
            client.pop3("USER bob@example.com")
            assert client.pop3("PASS bob-secret")[0].startswith("+OK")
            for _ in range(3):
                lines = client.pop3("RETR 1", multiline=True)
                assert len(lines) == 1 + 2 + 1000 + 1
            assert client.pop3("QUIT")[0].startswith("+OK")


# --- floods ----------------------------------------------------------------------------------------


def test_connection_flood_past_max_connections(tmp_path):
    with serving(persona("rfc", max_connections=20), tmp_path) as servers:
        port = servers.port_of("SMTP")
        kept = [LineClient(port) for _ in range(20)]
        try:
            for client in kept:
                assert client.smtp_reply()[0].startswith("220")
            refused = 0
            for _ in range(60):
                with LineClient(port) as extra:
                    reply = extra.smtp_reply()
                    assert reply[0].startswith("421"), reply
                    assert extra.closed_by_server()
                    refused += 1
            assert refused == 60
            for client in kept[:5]:
                assert client.smtp("NOOP")[0].startswith("250")
            kept.pop().close()

            def greeted() -> bool:
                with LineClient(port) as again:
                    return again.smtp_reply()[0].startswith("220")

            wait_until(greeted, timeout=5, what="a freed slot to be reused", interval=0.05)
        finally:
            for client in kept:
                client.close()


def test_connection_flood_per_client_limit_spares_other_clients(tmp_path):
    with serving(persona("rfc", max_connections_per_client=5), tmp_path) as servers:
        port = servers.port_of("POP3")
        flood = [raw_socket(port, source="127.0.0.2") for _ in range(5)]
        try:
            for sock in flood:
                assert sock.recv(512).startswith(b"+OK")
            for _ in range(20):
                with contextlib.closing(raw_socket(port, source="127.0.0.2")) as extra:
                    assert read_until_eof(extra, 5).startswith(b"-ERR")
            with contextlib.closing(raw_socket(port, source="127.0.0.3")) as other:
                assert other.recv(512).startswith(b"+OK")
        finally:
            for sock in flood:
                sock.close()


def test_many_short_connections_leave_nothing_behind(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        port = servers.port_of("SMTP")
        for _ in range(300):
            sock = raw_socket(port)
            sock.recv(256)
            sock.close()  # no QUIT
        wait_until(lambda: sessions_of(servers) == [], timeout=5, what="every session to end")
        assert in_reactor(servers, lambda: dict(servers.servers.context.limits.connections)) == {}


# --- 10 MB lines ----------------------------------------------------------------------------------


def test_ten_megabyte_command_line_is_discarded_not_held(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        port = servers.port_of("SMTP")
        with probing(port):
            sock = raw_socket(port)
            client_port = sock.getsockname()[1]
            assert sock.recv(512).startswith(b"220")
            chunk = b"A" * 65536
            peak = 0
            for index in range(160):  # 10 MB, no line end
                sock.sendall(chunk)
                if index % 20 == 0:
                    peak = max(peak, held_by(servers, session_by_port(servers, client_port))["input"])
            sock.sendall(b"\r\nNOOP\r\n")
            sock.settimeout(10)
            replies = b""
            while replies.count(b"\r\n") < 2:
                replies += sock.recv(4096)
            assert replies.startswith(b"500 5.5.2 Error: line too long\r\n") or replies.split(b"\r\n")[0][:3] == b"500", replies
            assert replies.split(b"\r\n")[1].startswith(b"250"), replies
            assert peak <= 2 * 65536 + 1024, peak
            sock.close()


def test_ten_megabyte_line_inside_data_over_the_size_limit(tmp_path):
    with serving(persona("rfc", max_message_size=1_000_000), tmp_path) as servers:
        port = servers.port_of("SMTP")
        sock = raw_socket(port)
        client_port = sock.getsockname()[1]
        assert sock.recv(512).startswith(b"220")
        sock.sendall(b"HELO x.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        data = read_lines(sock, 4)  # 250 250 250 354: the server reads the message now
        peak = 0
        for index in range(160):
            sock.sendall(b"B" * 65536)
            if index % 16 == 0:
                held = held_by(servers, session_by_port(servers, client_port))
                peak = max(peak, held["message"], held["input"])
        sock.sendall(b"\r\n.\r\nNOOP\r\n")
        sock.settimeout(10)
        while b"\r\n250 2.0.0 Ok\r\n" not in data and data.count(b"\r\n") < 7:
            data += sock.recv(4096)
        lines = data.split(b"\r\n")
        assert lines[3][:3] == b"354" and lines[4][:3] == b"552" and lines[5][:3] == b"250", lines
        assert peak <= 1_000_000, peak
        assert servers.servers.store.messages("bob@example.com") == []
        sock.close()


def test_ten_megabyte_pop3_line(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        sock = raw_socket(servers.port_of("POP3"))
        assert sock.recv(512).startswith(b"+OK")
        for _ in range(160):
            sock.sendall(b"C" * 65536)
        sock.sendall(b"\r\nNOOP\r\n")
        data = b""
        while data.count(b"\r\n") < 2:
            data += sock.recv(4096)
        assert data.startswith(b"-ERR"), data
        sock.close()


# --- half-closed sockets -------------------------------------------------------------------------


def test_smtp_half_close_gets_every_reply_then_eof(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        sock = raw_socket(servers.port_of("SMTP"))
        assert sock.recv(512).startswith(b"220")
        sock.sendall(
            b"EHLO half.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
            b"Subject: half\r\n\r\nsent, then SHUT_WR\r\n.\r\nNOOP\r\n"
        )
        sock.shutdown(socket.SHUT_WR)
        data = read_until_eof(sock)
        sock.close()
        finals = [line[:3] for line in data.split(b"\r\n") if line[3:4] == b" "]
        assert finals == [b"250", b"250", b"250", b"354", b"250", b"250"], data
        assert len(servers.servers.store.messages("bob@example.com")) == 1
        wait_until(lambda: sessions_of(servers) == [], timeout=5, what="every session to end")


def test_smtp_half_close_mid_data_stores_nothing(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        sock = raw_socket(servers.port_of("SMTP"))
        sock.recv(512)
        sock.sendall(b"HELO x.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nunfinished")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_eof(sock)
        sock.close()
        assert data.split(b"\r\n")[3][:3] == b"354", data
        assert servers.servers.store.messages("bob@example.com") == []


def test_pop3_half_close_answers_and_deletes_nothing(tmp_path):
    with serving(persona("rfc"), tmp_path) as servers:
        servers.servers.store.deliver(["bob@example.com"], b"Subject: keep\r\n\r\nme\r\n")
        sock = raw_socket(servers.port_of("POP3"))
        sock.recv(512)
        sock.sendall(b"USER bob@example.com\r\nPASS bob-secret\r\nSTAT\r\nDELE 1\r\nLIST\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = read_until_eof(sock)
        sock.close()
        assert data.count(b"+OK") == 5 and data.endswith(b".\r\n"), data
        assert len(servers.servers.store.messages("bob@example.com")) == 1  # no QUIT: nothing deleted
        # The maildrop lock was released: the next session logs in.
        with LineClient(servers.port_of("POP3")) as client:
            client.pop3_reply()
            client.pop3("USER bob@example.com")
            assert client.pop3("PASS bob-secret")[0].startswith("+OK")


# --- idle timeouts --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rfc", "qq"])
def test_idle_sessions_time_out_per_persona(tmp_path, name):
    with serving(persona(name, smtp_idle_timeout=1, pop3_idle_timeout=1.5), tmp_path) as servers:
        smtp = raw_socket(servers.port_of("SMTP"))
        pop3 = raw_socket(servers.port_of("POP3"))
        start = time.monotonic()
        smtp_data = read_until_eof(smtp, 10)
        smtp_after = time.monotonic() - start
        pop3_data = read_until_eof(pop3, 10)
        pop3_after = time.monotonic() - start
        smtp.close()
        pop3.close()
        assert smtp_data.split(b"\r\n")[1][:3] == b"421", smtp_data
        assert pop3_data.split(b"\r\n")[1].startswith(b"-ERR"), pop3_data
        assert 0.9 <= smtp_after < 4, smtp_after
        assert 1.4 <= pop3_after < 5, pop3_after


def test_activity_resets_the_idle_timer(tmp_path):
    with serving(persona("rfc", smtp_idle_timeout=1), tmp_path) as servers:
        with LineClient(servers.port_of("SMTP")) as client:
            client.smtp_reply()
            for _ in range(4):
                time.sleep(0.5)  # the scenario, not a wait: half the idle timeout without a word
                assert client.smtp("NOOP")[0].startswith("250")
            assert client.closed_by_server(3)
