"""Classroom-grade limits, each attacked over real loopback sockets (docs/security.md, section 10).

Every test here plays a hostile student against a running server and checks two things: the
attack is contained by its documented limit, and the rest of the class is still served with
nothing acknowledged lost. All bounded: loopback only, few connections, deadlines, no sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import poplib
import re
import resource
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from mockservers.output import LogWriter, OutputQueue
from mockservers.transcripts import read_transcript
from tests.live import LineClient, persona, serving
from tests.test_hardening_security import PROJECT, maillab_command

_LISTENING = re.compile(rb"^(SMTPS?|POP3S?) listening on (\S+):(\d+) ", re.MULTILINE)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _profile_file(tmp_path: Path, policies: str, extends: str = "rfc") -> Path:
    path = tmp_path / "lab.toml"
    path.write_text(f'extends = "{extends}"\nname = "lab"\n\n[policies]\n{policies}\n', encoding="utf-8")
    return path


class StalledServe:
    """`maillab serve` whose stdout is a small pipe that the test stops reading (a paused terminal)."""

    def __init__(self, process: subprocess.Popen, read_fd: int, ports: dict[str, int], seen: bytes) -> None:
        self.process = process
        self.read_fd = read_fd
        self.ports = ports
        self.seen = seen

    def read_until(self, pattern: re.Pattern[bytes], deadline: float = 20.0) -> re.Match[bytes]:
        """Resume reading the log until `pattern` appears."""
        match = self.read_until_true(lambda seen: pattern.search(seen), deadline, pattern.pattern)
        assert match is not None
        return match

    def read_until_true(self, found: Callable[[bytes], Any], deadline: float = 20.0, wanted: object = "") -> Any:
        """Resume reading the log until `found(log so far)` is truthy; return what it returned."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            result = found(self.seen)
            if result:
                return result
            ready, _, _ = select.select([self.read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    break
                self.seen += chunk
        raise AssertionError(f"{wanted!r} not in the log: {self.seen[-2000:]!r}")


@contextlib.contextmanager
def stalled_serve(tmp_path: Path, *extra: str) -> Iterator[StalledServe]:
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)  # the smallest pipe: a stalled reader shows at once
    process = subprocess.Popen(
        [*maillab_command(), "serve", "--data", str(tmp_path / "data"), "--smtp-port", "0", "--pop3-port", "0", *extra],
        stdout=write_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT,
    )  # fmt: skip
    os.close(write_fd)
    try:
        serve = StalledServe(process, read_fd, {}, b"")
        pattern = re.compile(rb"POP3 listening on \S+:\d+ ")
        serve.read_until(pattern)
        serve.ports = {m.group(1).decode(): int(m.group(3)) for m in _LISTENING.finditer(serve.seen)}
        yield serve
    finally:
        process.terminate()
        # Read what is left, so a process blocked on the pipe can exit.
        end = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < end:
            if select.select([read_fd], [], [], 0.2)[0] and not os.read(read_fd, 65536):
                break
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(read_fd)


# --- 4. output never blocks the reactor --------------------------------------------------------


def test_a_stalled_log_reader_drops_log_lines_never_sessions(tmp_path):
    profile = _profile_file(tmp_path, "log_queue_lines = 20")
    with stalled_serve(tmp_path, "--profile", str(profile)) as serve:
        # Nobody reads stdout from here on: 4 KiB of pipe and 20 queued lines fill in ~40 sessions.
        for number in range(120):
            with LineClient(serve.ports["SMTP"], timeout=5) as client:
                assert client.smtp_reply()[0].startswith("220"), number
                assert client.smtp("EHLO student")[0].startswith("250")
                assert client.smtp("QUIT")[0].startswith("221")
        match = serve.read_until(re.compile(rb"(\d+) log lines dropped"))
        assert int(match.group(1)) > 0

        # Every dropped line is counted: lines shown + lines dropped = the 240 that 120 sessions logged.
        def accounted(seen: bytes) -> tuple[int, int] | None:
            shown = len(re.findall(rb" SMTP smtp-\S+ \S+ (?:connected|disconnected)\n", seen))
            dropped = sum(int(m.group(1)) for m in re.finditer(rb"(\d+) log lines dropped", seen))
            return (shown, dropped) if shown + dropped >= 240 else None

        shown, dropped = serve.read_until_true(accounted, wanted="240 session lines shown or counted as dropped")
        assert shown + dropped == 240 and dropped > 0 and shown >= 20


def test_log_writer_never_waits_for_its_reader():
    released = threading.Event()

    class PausedTerminal:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            released.wait(10)
            self.text += text

        def flush(self) -> None:
            pass

    terminal = PausedTerminal()
    log = LogWriter(terminal, max_lines=5)
    started = time.monotonic()
    for number in range(1000):
        log.line(f"line {number}")
    assert time.monotonic() - started < 1.0  # 1000 lines against a stalled reader: never blocked
    released.set()
    assert log.drain(10)
    written = terminal.text.splitlines()
    dropped = sum(int(m.group(1)) for m in re.finditer(r"(\d+) log lines dropped", terminal.text))
    kept = [line for line in written if line.startswith("line ")]
    assert dropped > 900 and len(kept) + dropped == 1000
    assert kept == sorted(kept, key=lambda line: int(line.split()[1]))  # order kept


def test_a_stalled_transcript_disk_drops_transcript_lines_never_sessions(tmp_path):
    profile = persona(transcript_queue_bytes=4096)
    with serving(profile, tmp_path) as servers:
        output: OutputQueue = servers.servers.context.output
        disk = threading.Event()
        output.call(disk.wait, 20)  # the writer thread is stuck, as on a hung disk
        try:
            for number in range(40):
                with LineClient(servers.port_of("SMTP"), timeout=5) as client:
                    assert client.smtp_reply()[0].startswith("220")
                    assert client.smtp("EHLO student")[0].startswith("250")
                    assert client.smtp("MAIL FROM:<alice@example.com>")[0].startswith("250")
                    assert client.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
                    assert client.smtp("DATA")[0].startswith("354")
                    assert client.smtp(f"Subject: {number}\r\n\r\nhello\r\n.")[0].startswith("250")
                    assert client.smtp("QUIT")[0].startswith("221")
            assert output.dropped_bytes > 0
        finally:
            disk.set()
    # Every acknowledged message is stored; every session's transcript exists and says what it lost.
    assert len(list((tmp_path / "mailboxes" / "bob@example.com" / "new").iterdir())) == 40
    transcripts = list((tmp_path / "transcripts").rglob("*.jsonl"))
    assert len(transcripts) == 40
    events = [record.get("event") for path in transcripts for record in read_transcript(path)]
    assert events.count("close") == 40 and "dropped" in events


# --- 2. framing end to end -----------------------------------------------------------------------

FORGED = b"Subject: forged\r\n\r\nhello\n.\n+OK 0 octets\n.\r\nafter\rcr\r\n"


def _bdat(port: int, payload: bytes) -> None:
    with LineClient(port) as client:
        client.smtp_reply()
        assert client.smtp("EHLO student")[0].startswith("250")
        assert client.smtp("MAIL FROM:<alice@example.com>")[0].startswith("250")
        assert client.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
        client.send(f"BDAT {len(payload)} LAST\r\n".encode() + payload)
        assert client.smtp_reply()[0].startswith("250")


def _maildir_new(data: Path) -> Path:
    return data / "mailboxes" / "bob@example.com" / "new"


def test_a_bare_lf_dot_in_bdat_cannot_forge_a_pop3_reply(tmp_path):
    with serving(persona(), tmp_path) as servers:
        _bdat(servers.port_of("SMTP"), FORGED)
        [stored] = list(_maildir_new(tmp_path).iterdir())
        # Stored the qmail/Postfix/Dovecot way: LF endings, both sizes in the name.
        on_disk = stored.read_bytes()  # Return-Path and Received, then the message
        assert on_disk.endswith(FORGED.replace(b"\r\n", b"\n")) and b"\r\n" not in on_disk
        wire = on_disk.replace(b"\n", b"\r\n")
        assert stored.name.endswith(f",S={len(on_disk)},W={len(wire)}")
        pop = poplib.POP3("127.0.0.1", servers.port_of("POP3"), timeout=5)
        try:
            pop.user("bob@example.com")
            pop.pass_("bob-secret")
            count, size = pop.stat()
            assert (count, size) == (1, len(wire))  # RFC 1939 sizes count CRLF octets
            _, lines, octets = pop.retr(1)
            # poplib undoes the dot-stuffing: the forged lines are message text, nothing more.
            assert lines == wire.split(b"\r\n")[:-1]
            assert pop.noop().startswith(b"+OK")  # the next reply is the real one
            assert pop.list()[1] == [f"1 {len(wire)}".encode()]
        finally:
            pop.quit()


def test_crlf_maildir_files_of_older_versions_are_still_served(tmp_path):
    with serving(persona(), tmp_path) as servers:
        legacy = b"Subject: old\r\n\r\n.dot line\r\nbare\n.\nend\r\n"
        (_maildir_new(tmp_path) / "1000000000000000000.M1P1Q1.old").write_bytes(legacy)
        wire = legacy.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        pop = poplib.POP3("127.0.0.1", servers.port_of("POP3"), timeout=5)
        try:
            pop.user("bob@example.com")
            pop.pass_("bob-secret")
            assert pop.stat() == (1, len(wire))
            assert pop.retr(1)[1] == wire.split(b"\r\n")[:-1]
            assert pop.noop().startswith(b"+OK")
        finally:
            pop.quit()


def test_maillabs_own_client_reads_retr_by_the_same_rule(tmp_path):
    import asyncio

    from simulator.engine.client import MailClient
    from simulator.engine.replies import parse_pop3_reply

    async def retr(port: int) -> tuple[list[str], list[str]]:
        client = MailClient("127.0.0.1", port, timeout=5)
        await client.connect()
        await client.read_line()
        for line in ("USER bob@example.com", "PASS bob-secret", "RETR 1"):
            await client.send_line(line)
            status = await client.read_line()
            assert status.startswith("+OK"), status
        lines = [status]
        while lines[-1] != ".":
            lines.append(await client.read_line())
        await client.send_line("NOOP")
        after = [await client.read_line()]
        await client.close()
        return lines, after

    with serving(persona(), tmp_path) as servers:
        _bdat(servers.port_of("SMTP"), FORGED)
        lines, after = asyncio.run(retr(servers.port_of("POP3")))
    reply = parse_pop3_reply(lines, multiline=True)
    assert reply.terminated and not reply.problems
    expected = FORGED.replace(b"\r\n", b"\n").decode().split("\n")[:-1]
    assert list(reply.data[-len(expected):]) == expected and reply.data[0].startswith("Return-Path:")
    assert after[0].startswith("+OK")


# --- 1. connections: caps from the descriptor limit, eviction for newcomers, slowloris ------------


def _connect_from(address: str, port: int, timeout: float = 5.0) -> LineClient:
    """A client from another loopback address (127.0.0.0/8 is all loopback): another 'machine'."""
    client = LineClient.__new__(LineClient)
    client.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(address, 0))
    client.buffer = b""
    return client


def _limited_serve(tmp_path: Path, hard: int, policies: str) -> subprocess.Popen:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))

    log = tmp_path / "serve.log"
    profile = _profile_file(tmp_path, policies)
    out = open(log, "wb")
    process = subprocess.Popen(
        [*maillab_command(), "serve", "--data", str(tmp_path / "data"), "--smtp-port", "0", "--pop3-port", "0",
         "--profile", str(profile), "--quiet"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT, preexec_fn=limit,
    )  # fmt: skip
    out.close()
    return process


def _ports_from_log(log: Path, process: subprocess.Popen) -> dict[str, int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = {m.group(1).decode(): int(m.group(3)) for m in _LISTENING.finditer(log.read_bytes())}
        if "POP3" in found:
            return found
        assert process.poll() is None, log.read_text()
        select.select([], [], [], 0.05)
    raise AssertionError(log.read_text())


def test_idle_attackers_filling_every_slot_cannot_lock_a_student_out(tmp_path):
    hard = 256  # the server raises its soft limit (64) to this: (256 - 64 headroom) / 2 = 96 sessions
    process = _limited_serve(tmp_path, hard, "max_connections_per_client = 8")
    attackers: list[LineClient] = []
    try:
        ports = _ports_from_log(tmp_path / "serve.log", process)
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        assert re.search(r"Max open files\s+256\s+256", limits), limits  # soft raised to hard
        # Over the per-client cap, POP3 answers its own way: -ERR [SYS/TEMP] (RFC 3206).
        pop_attackers = [_connect_from("127.0.0.14", ports["POP3"]) for _ in range(8)]
        for client in pop_attackers:
            assert client.pop3_reply()[0].startswith("+OK")
        pop_extra = _connect_from("127.0.0.14", ports["POP3"])
        assert pop_extra.pop3_reply()[0].startswith("-ERR [SYS/TEMP]")
        for client in pop_attackers:
            assert client.pop3("QUIT")[0].startswith("+OK") and client.closed_by_server()
            client.close()
        pop_extra.close()
        # 12 'machines' x 8 idle connections: every slot of the server is held.
        for machine in range(2, 14):
            for _ in range(8):
                client = _connect_from(f"127.0.0.{machine}", ports["SMTP"])
                assert client.smtp_reply()[0].startswith("220")
                attackers.append(client)
        # A ninth connection from one machine: its per-client cap, 421 4.7.0 and closed.
        extra = _connect_from("127.0.0.2", ports["SMTP"])
        assert extra.smtp_reply()[0].startswith("421 4.7.0")
        assert extra.closed_by_server()
        extra.close()
        # The student: served, and the machine holding the most gave up its stalest connection.
        started = time.monotonic()
        with LineClient(ports["SMTP"]) as student:
            assert student.smtp_reply()[0].startswith("220")
            latency = time.monotonic() - started
            assert student.smtp("EHLO student")[0].startswith("250")
            assert student.smtp("MAIL FROM:<alice@example.com>")[0].startswith("250")
            assert student.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
            assert student.smtp("DATA")[0].startswith("354")
            assert student.smtp("Subject: hi\r\n\r\nserved\r\n.")[0].startswith("250")
        evicted = [c for c in attackers if select.select([c.sock], [], [], 0)[0]]
        assert len(evicted) == 1 and evicted[0].smtp_reply()[0].startswith("421 4.7.0")
        print(f"\n96 idle connections held; a fresh client got 220 in {latency * 1000:.1f} ms")
        assert len(list((tmp_path / "data" / "mailboxes" / "bob@example.com" / "new").iterdir())) == 1
    finally:
        for client in attackers:
            client.close()
        process.terminate()
        process.wait(10)


def test_a_client_sending_a_byte_at_a_time_without_a_line_end_is_dropped(tmp_path):
    profile = persona(min_data_rate=50, rate_grace=0.3)
    with serving(profile, tmp_path) as servers:
        for name, prefix, command in (("SMTP", "421 4.4.2", "NOOP"), ("POP3", "-ERR [SYS/TEMP]", "USER bob@example.com")):
            port = servers.port_of(name)
            with LineClient(port) as slow, LineClient(port) as student:
                slow.read_line()
                student.read_line()
                started = time.monotonic()
                slow.send(b"N")  # then nothing, or a byte now and then: under 50 bytes/s
                assert slow.read_line().startswith(prefix)
                assert slow.closed_by_server()
                assert time.monotonic() - started >= 0.3
                assert student.smtp(command)[0].startswith(("250", "+OK"))


def test_a_busy_session_ends_at_its_lifetime(tmp_path):
    profile = persona(max_session_time=0.5)
    with serving(profile, tmp_path) as servers:
        started = time.monotonic()
        with LineClient(servers.port_of("SMTP")) as client:
            client.smtp_reply()
            replies = []
            while time.monotonic() - started < 10:
                replies = client.smtp("NOOP")  # never idle: a reply every round trip
                if not replies[0].startswith("250"):
                    break
            assert replies[0].startswith("421 4.4.2")
            assert time.monotonic() - started >= 0.5
            assert client.closed_by_server()


# --- 5. authentication throttling ------------------------------------------------------------------

THROTTLE = dict(auth_failure_delay=0.05, auth_failure_delay_max=0.4, auth_lockout_failures=6, auth_lockout_window=60)


def _auth_plain(client: LineClient, user: str, secret: str) -> str:
    return client.smtp("AUTH PLAIN " + base64.b64encode(f"\0{user}\0{secret}".encode()).decode())[0]


def test_password_guessing_is_slowed_then_locked_out_across_reconnects_and_accounts(tmp_path):
    with serving(persona(**THROTTLE), tmp_path) as servers:
        port = servers.port_of("SMTP")
        failures, logins, answered, reply = 0, 0, [], ""
        # Alternate wrong guesses at alice with logins to one's own account (bob), reconnecting.
        while not reply.startswith("451") and failures + logins < 30:
            with _connect_from("127.0.0.2", port) as attacker:
                attacker.smtp_reply()
                attacker.smtp("EHLO attacker")
                for _ in range(2):
                    started = time.monotonic()
                    reply = _auth_plain(attacker, "alice@example.com", f"guess{failures}")
                    answered.append(time.monotonic() - started)
                    if not reply.startswith("535"):
                        break
                    failures += 1
                if reply.startswith("535"):
                    reply = _auth_plain(attacker, "bob@example.com", "bob-secret")
                    logins += reply.startswith("235")
        assert logins >= 2  # the successes in between reset nothing
        assert reply.startswith("451 4.7.0") and failures == 6  # the 7th try was never checked
        assert answered[2] >= 0.05 * 4  # delays double: 0.05, 0.1, 0.2 ...
        # Locked: even the right password is refused, from a new connection too, in POP3 too.
        with _connect_from("127.0.0.2", port) as attacker:
            attacker.smtp_reply()
            attacker.smtp("EHLO attacker")
            assert _auth_plain(attacker, "alice@example.com", "alice-secret").startswith("451 4.7.0")
        with _connect_from("127.0.0.2", servers.port_of("POP3")) as attacker:
            attacker.pop3_reply()
            attacker.pop3("USER alice@example.com")
            assert attacker.pop3("PASS alice-secret")[0] == "-ERR [AUTH] too many failed logins, closing"
        # The class is served: alice herself (another machine) and everyone else get in.
        for address, user, secret in (("127.0.0.3", "alice@example.com", "alice-secret"), ("127.0.0.1", "bob@example.com", "bob-secret")):
            with _connect_from(address, port) as student:
                student.smtp_reply()
                student.smtp("EHLO student")
                assert _auth_plain(student, user, secret).startswith("235")


# --- 7. sanitised output -------------------------------------------------------------------------

ESCAPES = "\x1b]0;owned\x07\x1b[2J"


def test_control_characters_never_reach_a_header_a_log_or_the_dashboard(tmp_path):
    from simulator.classroom.tracker import SessionLog, format_record

    from tests.test_hardening_security import maillab_serve

    log = tmp_path / "serve.log"
    with maillab_serve(tmp_path / "data", log) as listening:
        port = listening["SMTP"][1]
        with LineClient(port) as client:
            client.smtp_reply()
            # A CR in HELO would become a header of its own in Received: 501, and the session goes on.
            assert client.smtp(b"HELO evil\rX-Injected:yes\r\n")[0].startswith("501")
            assert client.smtp(f"EHLO evil{ESCAPES}")[0].startswith("501")
            assert client.smtp("EHLO student")[0].startswith("250")
            # A user name with a forged log line and terminal escapes inside its base64.
            forged = "x\r\n12:00:00 SMTP smtp-1 127.0.0.1:1 authenticated: admin" + ESCAPES
            assert client.smtp("AUTH LOGIN")[0].startswith("334")
            assert client.smtp(base64.b64encode(forged.encode()).decode())[0].startswith("334")
            assert client.smtp(base64.b64encode(b"wrong").decode())[0].startswith("535")
            assert client.smtp("MAIL FROM:<alice@example.com>")[0].startswith("250")
            assert client.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
            assert client.smtp("DATA")[0].startswith("354")
            assert client.smtp(f"Subject: {ESCAPES}\r\n\r\nhi\r\n.")[0].startswith("250")
            assert client.smtp("QUIT")[0].startswith("221")
        deadline = time.monotonic() + 10
        while b"authentication failed" not in log.read_bytes() and time.monotonic() < deadline:
            select.select([], [], [], 0.05)
    text = log.read_bytes()
    assert b"\x1b" not in text and b"\x07" not in text and b"\r" not in text
    assert b"authentication failed: x\\r\\n12:00:00" in text  # visible, escaped, on its own line
    assert not any(line.startswith(b"12:00:00") for line in text.splitlines())
    [stored] = list((tmp_path / "data" / "mailboxes" / "bob@example.com" / "new").iterdir())
    headers = stored.read_bytes().split(b"\n\n", 1)[0]
    assert b"X-Injected" not in headers and b"Received: from student " in headers
    # The instructor's follow view and dashboard rows show what the transcript holds, escaped.
    [transcript] = list((tmp_path / "data" / "transcripts").rglob("smtp-*.jsonl"))
    session = SessionLog(id="s", path=transcript)
    shown = [format_record(session, record) for record in read_transcript(transcript)]
    assert any("Subject: \\e]0;owned\\x07\\e[2J" in line for line in shown)
    assert not any(char in line for line in shown for char in "\x1b\x07\r\n")


# --- 6. memory: byte-at-a-time DATA costs about a byte per byte ---------------------------------------


def test_byte_at_a_time_data_is_held_at_about_its_own_size(tmp_path):
    import sys as _sys

    from twisted.internet.threads import blockingCallFromThread

    body = b"".join(b"line %06d of a message sent one byte per packet\r\n" % n for n in range(4000))  # ~200 KB
    with serving(persona(), tmp_path) as servers:
        with LineClient(servers.port_of("SMTP"), timeout=30) as client:
            client.smtp_reply()
            client.smtp("EHLO student")
            client.smtp("MAIL FROM:<alice@example.com>")
            client.smtp("RCPT TO:<bob@example.com>")
            assert client.smtp("DATA")[0].startswith("354")
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for offset in range(len(body)):
                client.sock.send(body[offset : offset + 1])
            client.send("NOOP")  # answered only after the server has read the whole body

            def held() -> tuple[int, int]:
                [session] = [s for s in servers.servers.context.sessions if s.envelope is not None]
                envelope = session.envelope
                return envelope.size, sum(_sys.getsizeof(part) for part in envelope.chunks) + _sys.getsizeof(envelope.tail)

            # Everything sent is in the envelope once the NOOP line (data too) has been read.
            deadline = time.monotonic() + 30
            size, cost = blockingCallFromThread(servers.reactor, held)
            while size < len(body) and time.monotonic() < deadline:
                select.select([], [], [], 0.05)
                size, cost = blockingCallFromThread(servers.reactor, held)
            assert size >= len(body)
            assert cost <= 1.2 * size + 64 * 1024, f"{cost} bytes held for {size} bytes of data"
            assert client.smtp(".")[0].startswith("250")  # NOOP was message text; '.' ends it
    [stored] = list(_maildir_new(tmp_path).iterdir())
    assert stored.read_bytes().endswith(body.replace(b"\r\n", b"\n") + b"NOOP\n")


# --- 9. quota and disk ----------------------------------------------------------------------------


def _send(port: int, recipient: str, body: bytes) -> list[str]:
    """One message; the replies to RCPT and to the end of data (or to RCPT only when refused)."""
    with LineClient(port) as client:
        client.smtp_reply()
        client.smtp("EHLO student")
        client.smtp("MAIL FROM:<alice@example.com>")
        rcpt = client.smtp(f"RCPT TO:<{recipient}>")[0]
        if not rcpt.startswith("250"):
            return [rcpt]
        assert client.smtp("DATA")[0].startswith("354")
        client.send(body + b".\r\n")
        return [rcpt, client.smtp_reply()[0]]


def test_a_mailbox_quota_refuses_mail_it_cannot_hold_and_loses_nothing_acknowledged(tmp_path):
    body = b"Subject: filler\r\n\r\n" + b"x" * 900 + b"\r\n"
    with serving(persona(mailbox_quota=5000), tmp_path) as servers:
        port = servers.port_of("SMTP")
        accepted = 0
        for _ in range(10):
            replies = _send(port, "bob@example.com", body)
            if replies[-1].startswith("250"):
                accepted += 1
                continue
            break
        # The message that would pass the quota: 552 5.2.2 at the end of data; the next one at RCPT.
        assert replies[-1] == "552 5.2.2 <bob@example.com>: Recipient address rejected: Mailbox full"
        stored = list(_maildir_new(tmp_path).iterdir())
        assert len(stored) == accepted >= 3
        assert sum(int(p.name.rpartition(",W=")[2]) for p in stored) <= 5000
        # Other students' mailboxes are not affected.
        assert _send(port, "alice@example.com", body)[-1].startswith("250")
        # Reading and deleting over POP3 makes room again.
        pop = poplib.POP3("127.0.0.1", servers.port_of("POP3"), timeout=5)
        pop.user("bob@example.com")
        pop.pass_("bob-secret")
        for number in range(1, accepted + 1):
            pop.dele(number)
        pop.quit()
        assert _send(port, "bob@example.com", body)[-1].startswith("250")


def test_quota_can_be_temporary_and_the_rcpt_of_a_full_mailbox_is_refused(tmp_path):
    body = b"Subject: filler\r\n\r\n" + b"x" * 900 + b"\r\n"
    with serving(persona(), tmp_path) as servers:
        assert _send(servers.port_of("SMTP"), "bob@example.com", body)[-1].startswith("250")
    # The instructor lowers the quota below what the mailbox holds (counted from its files).
    with serving(persona(mailbox_quota=500, quota_full_tempfail=True), tmp_path) as servers:
        port = servers.port_of("SMTP")
        assert _send(port, "bob@example.com", body) == ["452 4.2.2 <bob@example.com>: Recipient address rejected: Mailbox full"]
        assert _send(port, "alice@example.com", b"Subject: small\r\n\r\nhi\r\n")[-1].startswith("250")
    assert len(list(_maildir_new(tmp_path).iterdir())) == 1


def test_a_disk_under_its_free_space_threshold_refuses_with_452_and_stores_nothing(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    with serving(persona(min_free_disk=free + (1 << 40)), tmp_path) as servers:
        port = servers.port_of("SMTP")
        assert _send(port, "bob@example.com", b"Subject: x\r\n\r\nhi\r\n")[-1] == "452 4.3.1 Insufficient system storage"
        box = tmp_path / "mailboxes" / "bob@example.com"
        assert not list((box / "new").iterdir()) and not list((box / "tmp").iterdir())


# --- 10. POP3 USER tells nothing; evidence goes to the logged-in student -----------------------------


def test_pop3_user_answers_alike_for_known_and_unknown_mailboxes(tmp_path):
    for profile in (persona("postfix"), persona("rfc", hide_unknown_users=True)):
        answers = []
        with serving(profile, tmp_path / profile.name) as servers:
            for user in ("bob@example.com", "nobody-here@example.com"):
                with LineClient(servers.port_of("POP3")) as client:
                    client.pop3_reply()
                    answers.append((client.pop3(f"USER {user}")[0].replace(user, "NAME"), client.pop3("PASS wrong-guess")[0]))
        assert answers[0] == answers[1], (profile.name, answers)
        assert answers[0][0].startswith("+OK") and answers[0][1].startswith("-ERR")
    # The textbook persona keeps RFC 1939's example, which does tell.
    with serving(persona("rfc"), tmp_path / "textbook") as servers, LineClient(servers.port_of("POP3")) as client:
        client.pop3_reply()
        assert client.pop3("USER nobody-here@example.com")[0] == "-ERR sorry, no mailbox for nobody-here@example.com here"


def test_a_classmate_cannot_charge_errors_to_another_students_grade(tmp_path):
    from simulator.classroom.config import class_profile, init_class, load_lesson
    from simulator.classroom.tracker import ClassTracker

    from tests.test_classroom_helpers import plain, write_pack

    config = init_class(tmp_path / "room", students=3, lessons=write_pack(tmp_path), domain="class.test", server_host="127.0.0.1")
    victim, attacker = config.students[1], config.students[2]
    with serving(class_profile(config), config.data_dir) as servers:
        port = servers.port_of("SMTP")
        with _connect_from("127.0.0.9", port) as hostile:  # never logs in, names the victim everywhere
            hostile.smtp_reply()
            hostile.smtp(f"EHLO {victim.local_part}-laptop")
            for _ in range(5):
                hostile.smtp(f"MAIL FROM:<{victim.address}>")
                assert hostile.smtp("RCPT TO:<nobody@class.test>")[0].startswith("550")  # an error to charge
                hostile.smtp("RSET")
            hostile.smtp("QUIT")
        with _connect_from("127.0.0.10", port) as student:  # the attacker's own, logged-in session
            student.smtp_reply()
            student.smtp("EHLO laptop")
            assert student.smtp(f"AUTH PLAIN {plain(attacker.address, attacker.secret)}")[0].startswith("235")
            student.smtp(f"MAIL FROM:<{victim.address}>")
            assert student.smtp("RCPT TO:<nobody@class.test>")[0].startswith("550")
            student.smtp("QUIT")
    tracker = ClassTracker(config, load_lesson(config, "class-exchange"), live=False)
    rows = {row.id: row for row in tracker.poll().students}
    assert rows[victim.id].sessions == 0 and rows[victim.id].errors == 0
    assert rows[attacker.id].sessions == 1 and rows[attacker.id].errors >= 1  # charged to who logged in


# --- 8. secrets ---------------------------------------------------------------------------------------


def test_known_secrets_are_hidden_whatever_field_they_were_typed_in(tmp_path, monkeypatch):
    from tests.test_hardening_security import maillab_serve

    file_secret, env_secret = "Fi1e-Secret-42", "Env-Secret-77"
    accounts = tmp_path / "accounts.txt"
    accounts.write_text(f"# lab accounts\ncarol@example.com:{file_secret}\n", encoding="utf-8")
    monkeypatch.setenv("LAB_ACCOUNTS", f"dave@example.com:{env_secret}\n")
    log = tmp_path / "serve.log"
    data = tmp_path / "data"
    with maillab_serve(data, log, "--account-file", str(accounts), "--account-env", "LAB_ACCOUNTS") as listening:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        for pid in pids:  # the secrets are on no command line (`ps` shows every user's)
            with contextlib.suppress(OSError):
                assert file_secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        smtp_port, pop3_port = listening["SMTP"][1], listening["POP3"][1]
        with LineClient(pop3_port) as client:
            client.pop3_reply()
            client.pop3(f"USER {file_secret}")  # the secret in the user-name field
            client.pop3(f"PASS {file_secret}")
            client.pop3("USER carol@example.com")
            assert client.pop3(f"PASS {file_secret}")[0].startswith("+OK")  # read from the file: it works
        with LineClient(smtp_port) as client:
            client.smtp_reply()
            client.smtp("EHLO x")
            assert client.smtp("AUTH LOGIN")[0].startswith("334")
            client.smtp(base64.b64encode(env_secret.encode()).decode())  # as the user name, base64
            client.smtp(base64.b64encode(b"dave@example.com").decode())
            client.smtp(f"NOOP {base64.b64encode(env_secret.encode()).decode()}")
            client.smtp(f"MAIL FROM:<{env_secret}@example.com>")
            client.smtp("RSET")
            assert _auth_plain(client, "dave@example.com", env_secret).startswith("235")  # from the environment
            client.smtp("QUIT")
    haystacks = [path.read_bytes() for path in data.rglob("*.jsonl")] + [log.read_bytes()]
    for secret in (file_secret, env_secret):
        for form in (secret.encode(), base64.b64encode(secret.encode()), base64.b64encode(secret.encode()).rstrip(b"=")):
            assert not any(form in text for text in haystacks), form
    assert any(b"USER ***" in text for text in haystacks)
    # Owner only: the data directory and every directory below 0700, mail and transcripts 0600.
    assert data.stat().st_mode & 0o777 == 0o700
    for path in data.rglob("*"):
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode & 0o077 == 0 or path.parent != data, (path, oct(mode))
        elif path.suffix != ".pem" or "key" in path.name:
            assert mode == 0o600, (path, oct(mode))


# --- 3. bounded parsing: a hostile message fails only its own check ------------------------------------


def _deep_mime(depth: int) -> bytes:
    head = b"Subject: not what the lesson asks\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n) for n in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % n for n in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\ndeep\r\n" + closing


def test_a_message_nested_1200_levels_deep_fails_only_its_senders_check(tmp_path):
    from simulator.classroom.config import class_profile, init_class, load_lesson
    from simulator.classroom.grading import grade_class
    from simulator.engine.message_view import view_message

    from tests.test_classroom_helpers import Student, plain, write_pack

    config = init_class(tmp_path / "room", students=4, lessons=write_pack(tmp_path), domain="class.test", server_host="127.0.0.1")
    honest, hostile = config.students[0], config.students[1]
    victim = config.partner(honest)
    deep = _deep_mime(1200)
    with serving(class_profile(config), config.data_dir) as servers:
        port = servers.port_of("SMTP")
        with Student(port, "127.0.0.21") as s:  # the hostile one fills the honest one's partner's mailbox first
            s.reply()
            s.cmd("EHLO laptop")
            assert s.cmd(f"AUTH PLAIN {plain(hostile.address, hostile.secret)}").startswith("235")
            assert s.cmd(f"MAIL FROM:<{hostile.address}>").startswith("250")
            assert s.cmd(f"RCPT TO:<{victim.address}>").startswith("250")
            assert s.cmd("DATA").startswith("354")
            s.sock.sendall(deep + b".\r\n")
            assert s.reply()[0].startswith("250")  # stored like any message: nothing acknowledged is lost
        with Student(port, "127.0.0.20") as s:
            s.reply()
            s.cmd("EHLO laptop")
            assert s.cmd(f"AUTH PLAIN {plain(honest.address, honest.secret)}").startswith("235")
            assert s.message(honest.address, victim.address, f"hello from {honest.local_part}").startswith("250")
    report = grade_class(config, load_lesson(config, "class-exchange"))
    grades = {grade.id: grade for grade in report.students}
    assert grades[honest.id].problem is None and "send" in grades[honest.id].completed
    assert grades[hostile.id].problem is None and "send" not in grades[hostile.id].completed
    # The inspector shows the message's headers and says it stopped walking, without raising.
    [stored] = [p for p in (config.data_dir / "mailboxes" / victim.address / "new").iterdir() if b"not what" in p.read_bytes()]
    view = view_message(stored.read_bytes())
    assert view.parts_truncated and any(name == "Subject" for name, _ in view.headers)


def test_connection_caps_count_right_after_any_order_of_opens_and_closes():
    """The caps read running totals: after opens, refusals and closes (some for slots never held)
    they agree with the per-client counts, which `_open_slot` and the eviction rule also read."""
    from mockservers.limits import ServerLimits

    limits = ServerLimits(max_sessions=6)
    assert [limits.open("SMTP", "a", 3, 2) for _ in range(3)] == [None, None, "client"]
    assert limits.open("SMTP", "b", 3, 2) is None
    assert limits.open("SMTP", "c", 3, 2) == "total"
    assert [limits.open("POP3", f"p{n}", 0, 0) for n in range(4)] == [None, None, None, "server"]
    limits.close("SMTP", "a")
    limits.close("SMTP", "nobody")  # a slot never held changes nothing
    assert limits.open("SMTP", "c", 3, 2) is None
    assert limits.open("POP3", "p9", 0, 0) == "server"
    for protocol, client in (("SMTP", "a"), ("SMTP", "b"), ("SMTP", "c"), ("POP3", "p0"), ("POP3", "p1"), ("POP3", "p2")):
        limits.close(protocol, client)
    assert dict(limits.connections) == {}
    assert [limits.open("POP3", f"q{n}", 0, 0) for n in range(7)] == [None] * 6 + ["server"]
