"""Classroom-grade limits, each attacked over real loopback sockets (docs/security.md, section 10).

Every test here plays a hostile student against a running server and checks two things: the
attack is contained by its documented limit, and the rest of the class is still served with
nothing acknowledged lost. All bounded: loopback only, few connections, deadlines, no sleeps.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import poplib
import re
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

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
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            match = pattern.search(self.seen)
            if match:
                return match
            ready, _, _ = select.select([self.read_fd], [], [], 0.5)
            if ready:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    break
                self.seen += chunk
        raise AssertionError(f"{pattern.pattern!r} not in the log: {self.seen[-2000:]!r}")


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
        # Every dropped line is counted: reported lines + dropped = what 120 sessions logged.
        serve.read_until(re.compile(rb"(?s)dropped.*disconnected\n"))


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
