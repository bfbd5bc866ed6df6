"""Crash safety: a 250 means the message is on disk, once; a full disk is a 4xx, never a 250.

* `maillab serve` is killed with SIGKILL while eight clients deliver several hundred messages;
  after a restart on the same data directory every message that got a 250 is in the mailbox
  exactly once, complete, and readable over POP3 (RETR), and nothing half-written is visible.
  (SIGKILL tests the order of operations, i.e. that the 250 leaves only after the message is
  written, fsynced and linked into new/ and new/ is fsynced; the page cache survives a killed
  process, so what fsync adds against power loss is argued in docs/security.md, not tested.)
* A full disk during DATA: a real small tmpfs when this runs as root and `mount` works (skipped
  cleanly otherwise), and an always-run variant where the store's system calls raise ENOSPC /
  EDQUOT / EIO at each step of a delivery (write, fsync, link, directory fsync): the reply is
  452 (full) or 451 (other errors), new/ stays empty, and the session goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

import mockservers.store as store_module
from fakes import smtp as smtp_harness
from live import LineClient, persona, serving
from waiting import wait_until

PROJECT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"^(SMTP|POP3) listening on (\S+):(\d+) ")


def maillab_command() -> list[str]:
    script = Path(sys.executable).with_name("maillab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "simulator.cli"]


@contextlib.contextmanager
def maillab_serve(data_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen, dict[str, int]]]:
    process = subprocess.Popen(
        [*maillab_command(), "serve", "--profile", "rfc", "--host", "127.0.0.1", "--smtp-port", "0",
         "--pop3-port", "0", "--data", str(data_dir), "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, cwd=PROJECT,
    )  # fmt: skip
    ports: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 20
        assert process.stdout is not None
        while len(ports) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = _LISTENING.match(line)
            if match:
                ports[match.group(1)] = int(match.group(3))
        assert len(ports) == 2, f"maillab serve did not start: {ports}"
        yield process, ports
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def message_for(token: str) -> bytes:
    body = "".join(f"line {n} of {token}\r\n" for n in range(40))
    return f"Subject: {token}\r\nMessage-ID: <{token}@crash.test>\r\n\r\n{body}END {token}\r\n".encode()


class Deliverer(threading.Thread):
    """Sends messages over one SMTP connection until told to stop; records what got a 250."""

    def __init__(self, port: int, acknowledged: list[str], lock: threading.Lock, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acknowledged = acknowledged
        self.lock = lock
        self.stop_event = stop
        self.attempted: list[str] = []

    def run(self) -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
            client.ehlo("crash.example")
            while not self.stop_event.is_set():
                token = uuid.uuid4().hex
                self.attempted.append(token)
                client.sendmail("alice@example.com", ["bob@example.com"], message_for(token))
                with self.lock:  # sendmail returned: the server said 250 to the message
                    self.acknowledged.append(token)
        except (OSError, smtplib.SMTPException):
            return  # the server was killed mid-conversation


def retrieve_all(port: int) -> list[bytes]:
    messages = []
    with LineClient(port, timeout=20) as client:
        client.pop3_reply()
        client.pop3("USER bob@example.com")
        assert client.pop3("PASS bob-secret")[0].startswith("+OK")
        count = int(client.pop3("STAT")[0].split()[1])
        for number in range(1, count + 1):
            lines = client.pop3(f"RETR {number}", multiline=True)
            assert lines[0].startswith("+OK") and lines[-1] == "."
            body = [line[1:] if line.startswith("..") else line for line in lines[1:-1]]
            messages.append(("\r\n".join(body) + "\r\n").encode())
        client.pop3("QUIT")
    return messages


def kill_during_load(data_dir: Path, target: int, clients: int = 8) -> tuple[list[str], set[str]]:
    """Start `maillab serve`, load it, SIGKILL it once `target` messages got a 250."""
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    with maillab_serve(data_dir) as (process, ports):
        deliverers = [Deliverer(ports["SMTP"], acknowledged, lock, stop) for _ in range(clients)]
        for deliverer in deliverers:
            deliverer.start()
        wait_until(lambda: len(acknowledged) >= target, timeout=120, what=f"{target} acknowledged messages", interval=0.005)
        process.send_signal(signal.SIGKILL)  # mid-load: deliveries are in flight right now
        process.wait(timeout=10)
        stop.set()
        for deliverer in deliverers:
            deliverer.join(timeout=15)
    with lock:
        acked = list(acknowledged)
    assert len(acked) >= target, f"only {len(acked)} messages acknowledged before the kill"
    return acked, {token for d in deliverers for token in d.attempted}


def check_mailbox(data_dir: Path, acked: list[str], attempted: set[str], in_flight: int) -> int:
    """Restart on the same data: every acknowledged message once, complete; returns the count."""
    with maillab_serve(data_dir) as (_, ports):
        retrieved = retrieve_all(ports["POP3"])
    seen: dict[str, int] = {}
    for content in retrieved:
        token = re.search(rb"Subject: ([0-9a-f]{32})", content)
        assert token is not None, content[:200]
        name = token.group(1).decode()
        # Complete, never half-written: the exact bytes sent, after the trace headers.
        assert content.endswith(message_for(name)), f"message {name} is damaged"
        assert name in attempted
        seen[name] = seen.get(name, 0) + 1
    missing = [token for token in acked if token not in seen]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    duplicated = [token for token, count in seen.items() if count > 1]
    assert not duplicated, f"stored twice: {duplicated[:3]}"
    # At most the messages in flight at a kill (one per client) were stored without their 250.
    assert len(seen) - len(acked) <= in_flight
    return len(seen)


def test_sigkill_during_load_loses_no_acknowledged_message(tmp_path):
    data_dir = tmp_path / "data"
    acked, attempted = kill_during_load(data_dir, 300)
    check_mailbox(data_dir, acked, attempted, in_flight=8)


@pytest.mark.slow
def test_sigkill_again_and_again(tmp_path):
    """Ten kills, 400 acknowledged messages each, on one data directory (make test-long)."""
    data_dir = tmp_path / "data"
    all_acked: list[str] = []
    all_attempted: set[str] = set()
    for cycle in range(10):
        acked, attempted = kill_during_load(data_dir, 400, clients=16)
        all_acked += acked
        all_attempted |= attempted
        stored = check_mailbox(data_dir, all_acked, all_attempted, in_flight=16 * (cycle + 1))
        assert stored >= len(all_acked)


# --- full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a small tmpfs")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill(directory: Path, leave: int) -> Path:
    """Fill the filesystem of `directory` until about `leave` octets are free."""
    filler = directory / "filler"
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def send_message(client: LineClient, content: bytes) -> list[str]:
    assert client.smtp("MAIL FROM:<alice@example.com>")[0].startswith("250")
    assert client.smtp("RCPT TO:<bob@example.com>")[0].startswith("250")
    assert client.smtp("DATA")[0].startswith("354")
    client.send(content + b".\r\n")
    return client.smtp_reply()


def test_full_tmpfs_during_data_is_452_never_250(small_tmpfs):
    data_dir = small_tmpfs / "data"
    # min_free_disk = 0: the disk really fills up here (the threshold is tested in test_lab_limits.py).
    with serving(persona("rfc", min_free_disk=0), data_dir, tls=False) as servers:
        filler = fill(small_tmpfs, 64 * 1024)
        big = b"Subject: too big for the disk\r\n\r\n" + (b"x" * 998 + b"\r\n") * 300
        with LineClient(servers.port_of("SMTP")) as client:
            client.smtp_reply()
            client.smtp("EHLO full.example")
            reply = send_message(client, big)
            assert reply[0][:3] in ("452", "451"), reply
            assert reply[0].startswith("452"), f"ENOSPC should say 452 (insufficient storage): {reply}"
            assert client.smtp("NOOP")[0].startswith("250")  # the session goes on
            assert list((data_dir / "mailboxes" / "bob@example.com" / "new").iterdir()) == []
            assert list((data_dir / "mailboxes" / "bob@example.com" / "tmp").iterdir()) == []
            filler.unlink()  # space again: the retry is accepted
            assert send_message(client, big)[0].startswith("250")
        assert len(servers.servers.store.messages("bob@example.com")) == 1


class FailingOS(types.SimpleNamespace):
    """The store's view of `os`, with one call failing (what a full or broken disk does)."""


def failing_os(call: str, code: int, *, after: int = 0) -> Any:
    calls = {"n": 0}
    real = getattr(os, call)

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    proxy = FailingOS(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    setattr(proxy, call, failing)
    proxy.path = os.path
    return proxy


@pytest.mark.parametrize(
    "call, code, after, expected",
    [
        ("write", errno.ENOSPC, 0, "452"),  # the message file cannot be written
        ("write", errno.EDQUOT, 0, "452"),  # over quota: also "insufficient storage"
        ("fsync", errno.ENOSPC, 0, "452"),  # delayed allocation fails at fsync
        ("fsync", errno.EIO, 0, "451"),  # the disk is broken: a generic local error
        ("link", errno.ENOSPC, 0, "452"),  # no room for the directory entry
        ("fsync", errno.EIO, 1, "451"),  # the file is safe, the directory fsync fails
    ],
)
def test_store_errors_during_data_are_4xx_and_leave_nothing(tmp_path, monkeypatch, call, code, after, expected):
    h = smtp_harness(tmp_path)
    h.send("EHLO x.example")
    h.send("MAIL FROM:<alice@example.com>")
    h.send("RCPT TO:<bob@example.com>")
    assert h.send("DATA")[0].startswith("354")
    h.store.ensure_mailbox("bob@example.com")
    monkeypatch.setattr(store_module, "os", failing_os(call, code, after=after))
    reply = h.raw(b"Subject: doomed\r\n\r\nbody\r\n.\r\n")
    monkeypatch.undo()
    assert reply and reply[-1][:3] == expected, reply
    box = tmp_path / "mailboxes" / "bob@example.com"
    assert list((box / "new").iterdir()) == [], "a message the client was refused is visible"
    assert list((box / "tmp").iterdir()) == []
    assert h.store.messages("bob@example.com") == []
    assert h.send("NOOP")[0].startswith("250")
    # And once the disk is fine again, the same transaction succeeds.
    h.send("MAIL FROM:<alice@example.com>")
    h.send("RCPT TO:<bob@example.com>")
    h.send("DATA")
    assert h.raw(b"Subject: fine\r\n\r\nbody\r\n.\r\n")[-1].startswith("250")
    assert len(h.store.messages("bob@example.com")) == 1


def test_enospc_over_a_real_socket_while_other_sessions_go_on(tmp_path, monkeypatch):
    with serving(persona("rfc"), tmp_path, tls=False) as servers:
        with LineClient(servers.port_of("SMTP")) as client, LineClient(servers.port_of("SMTP")) as other:
            client.smtp_reply()
            other.smtp_reply()
            client.smtp("EHLO x.example")
            monkeypatch.setattr(store_module, "os", failing_os("write", errno.ENOSPC))
            reply = send_message(client, b"Subject: full\r\n\r\nno room\r\n")
            monkeypatch.undo()
            assert reply == ["452 4.3.1 Insufficient system storage"]
            assert other.smtp("NOOP")[0].startswith("250")
            assert servers.servers.store.messages("bob@example.com") == []


def test_transcripts_on_a_full_disk_do_not_break_sessions(small_tmpfs):
    data_dir = small_tmpfs / "data"
    with serving(persona("rfc"), data_dir, tls=False) as servers:
        fill(small_tmpfs, 0)
        for _ in range(3):
            with LineClient(servers.port_of("SMTP")) as client:
                assert client.smtp_reply()[0].startswith("220")
                client.smtp("EHLO x.example")
                assert client.smtp("NOOP")[0].startswith("250")
                assert client.smtp("QUIT")[0].startswith("221")


# --- group commit of directory fsyncs ------------------------------------------------------------


def test_group_commit_shares_directory_fsyncs_and_never_acknowledges_early(tmp_path, monkeypatch):
    """Concurrent deliveries share fsyncs of new/, and each returns only after an fsync that
    started after its own link into new/ has finished (the rule that makes the 250 safe)."""
    store = store_module.MailStore(tmp_path)
    store.ensure_mailbox("bob@example.com")
    clock = threading.Lock()
    events: list[tuple[str, float, Any]] = []
    real_fsync_dir = store_module._fsync_dir

    def slow_fsync_dir(directory: Path) -> None:
        with clock:
            events.append(("sync-start", time.monotonic(), str(directory)))
        time.sleep(0.02)  # the scenario, not a wait: a slow disk, so many deliveries arrive during one fsync
        real_fsync_dir(directory)
        with clock:
            events.append(("sync-end", time.monotonic(), str(directory)))

    proxy = failing_os("link", errno.ENOSPC, after=10**9)  # a pass-through os, with link wrapped below
    real_link = os.link

    def recording_link(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        real_link(source, target, *args, **kwargs)
        with clock:
            events.append(("link", time.monotonic(), os.path.basename(str(target)).split(",", 1)[0]))  # the uid

    proxy.link = recording_link
    monkeypatch.setattr(store_module, "os", proxy)
    monkeypatch.setattr(store_module, "_fsync_dir", slow_fsync_dir)
    returned: dict[str, float] = {}

    def deliver(n: int) -> None:
        name = store.deliver(["bob@example.com"], f"Subject: {n}\r\n\r\nbody\r\n".encode())
        returned[name] = time.monotonic()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    monkeypatch.undo()
    new_dir = str(tmp_path / "mailboxes" / "bob@example.com" / "new")
    syncs = []
    starts = {}
    for index, (kind, when, what) in enumerate(events):
        if kind == "sync-start" and what == new_dir:
            starts[len(syncs)] = when
            syncs.append([when, None])
        elif kind == "sync-end" and what == new_dir:
            open_syncs = [s for s in syncs if s[1] is None]
            open_syncs[0][1] = when
    assert len(returned) == 24 and len(store.messages("bob@example.com")) == 24
    assert 1 <= len(syncs) < 24, f"{len(syncs)} directory fsyncs for 24 concurrent deliveries"
    links = {what: when for kind, when, what in events if kind == "link"}
    for name, done in returned.items():
        linked = links[name]
        assert any(start > linked and end is not None and end <= done for start, end in syncs), (
            f"{name} returned without an fsync of new/ that started after its link"
        )
