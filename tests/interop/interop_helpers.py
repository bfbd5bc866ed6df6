"""Interop helpers: a real `maillab serve` subprocess on free loopback ports, and helpers to drive it.

Most tests get their own server and data directory (the `maillab_server` factory fixture), so they
never see each other's mail; `shared_rfc_server` serves a module's tests that need no isolation. The server is started exactly as a learner starts it, its listening
lines are parsed from stdout, and teardown checks that SIGTERM stops it with exit status 0.

Every subprocess call has a timeout. A test is skipped only when the external client binary it
drives is absent (CI installs them all, so a skip there is something to investigate).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pytest

from mockservers.store import to_wire
from waiting import wait_until

PROJECT = Path(__file__).resolve().parents[2]
_VENV_MAILLAB = PROJECT / ".venv" / "bin" / "maillab"
_BIN_MAILLAB = Path(sys.executable).with_name("maillab")

START_TIMEOUT = 10.0  # seconds to wait for every listening line
STOP_TIMEOUT = 10.0  # seconds to wait for exit after SIGTERM before SIGKILL
TOOL_TIMEOUT = 30.0  # default timeout of one external client run

_LISTENING = re.compile(r"^(SMTP|POP3|SMTPS|POP3S) listening on (\S+):(\d+) \(profile (\S+)\)$")


def maillab_command() -> list[str]:
    """How to run `maillab`: the console script of this interpreter's venv, else the module."""
    for candidate in (_BIN_MAILLAB, _VENV_MAILLAB):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-m", "simulator.cli"]


def require_tool(name: str) -> str:
    """The path of an external client, or skip the test (only) when the binary is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it: see .ci/run)")
    return path


def run_tool(
    args: Sequence[str],
    *,
    input: bytes | str | None = None,
    timeout: float = TOOL_TIMEOUT,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a client to completion with a timeout; output is text (undecodable bytes replaced)."""
    data = input.encode() if isinstance(input, str) else input
    try:
        completed = subprocess.run(
            list(args),
            input=data,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
            cwd=cwd,
            env=env,
        )
    except subprocess.TimeoutExpired as expired:
        out = (expired.stdout or b"").decode("utf-8", "replace")
        err = (expired.stderr or b"").decode("utf-8", "replace")
        pytest.fail(f"{args[0]} did not finish within {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}")
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


@dataclass
class MaillabServer:
    """A running `maillab serve` and what a client needs to talk to it."""

    process: subprocess.Popen[str]
    profile: str
    data_dir: Path
    smtp_port: int
    pop3_port: int
    smtps_port: int | None
    pop3s_port: int | None
    output: list[str] = field(default_factory=list)  # every stdout line so far (listening + events)
    host: str = "127.0.0.1"
    _ca_path: Path | None = None
    stopped: bool = False

    @property
    def ca_path(self) -> Path:
        """The CA certificate, as `maillab cert --data DIR` prints it."""
        if self._ca_path is None:
            completed = run_tool([*maillab_command(), "cert", "--data", str(self.data_dir)], timeout=30)
            assert completed.returncode == 0, completed.stderr
            lines = completed.stdout.splitlines()
            assert len(lines) == 1, completed.stdout
            path = Path(lines[0])
            assert path.is_file(), path
            self._ca_path = path
        return self._ca_path

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only maillab's CA (hostname checks on)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    # --- the mail store ----------------------------------------------------------------------

    def mailbox_dir(self, address: str) -> Path:
        return self.data_dir / "mailboxes" / address.lower()

    def mailbox(self, address: str) -> list[bytes]:
        """The messages in a mailbox (new, then cur), oldest first by file name, as they travel on
        the wire (CRLF): the files keep LF endings, so that is what clients are compared with."""
        return [to_wire(content) for content in self.mailbox_files(address)]

    def mailbox_files(self, address: str) -> list[bytes]:
        """The message files of a mailbox byte for byte (LF line endings, as Postfix and Dovecot write them)."""
        box = self.mailbox_dir(address)
        files: list[Path] = []
        for sub in ("new", "cur"):
            directory = box / sub
            if directory.is_dir():
                files.extend(sorted(p for p in directory.iterdir() if p.is_file()))
        return [p.read_bytes() for p in files]

    def queue_files(self) -> list[Path]:
        directory = self.data_dir / "queue"
        return sorted(directory.iterdir()) if directory.is_dir() else []

    def transcript_text(self, closed_sessions: int = 0, timeout: float = 10.0) -> str:
        """Every transcript record of this server, concatenated (JSON lines), once at least
        `closed_sessions` transcripts end with their close record (a writer thread writes them)."""
        directory = self.data_dir / "transcripts"

        def enough_closed() -> tuple[str] | None:
            files = sorted(directory.rglob("*.jsonl")) if directory.is_dir() else []
            texts = [p.read_text("utf-8", "replace") for p in files]
            closed = sum(1 for text in texts if text.rstrip().endswith('"event": "close"}'))
            return ("".join(texts),) if closed >= closed_sessions else None  # a tuple: "" is an answer too

        return wait_until(enough_closed, timeout, f"{closed_sessions} closed transcripts", 0.02)[0]

    def wait_for_output(self, pattern: str, timeout: float = 5.0) -> str:
        """Wait until a stdout line (an event line) matches `pattern`; return it."""
        regex = re.compile(pattern)

        def matching() -> str | None:
            return next((line for line in list(self.output) if regex.search(line)), None)

        try:
            return wait_until(matching, timeout, f"a server output line matching {pattern!r}", 0.02)
        except AssertionError as error:
            raise AssertionError(f"{error}; output was:\n" + "\n".join(self.output)) from None

    # --- lifecycle ---------------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig`, wait (kill after STOP_TIMEOUT) and return the exit status."""
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(f"maillab serve ignored signal {sig} for {STOP_TIMEOUT} s and was killed")


def _pump(stream, lines: list[str], notify: "queue.Queue[str | None]") -> None:
    """Collect the server's stdout so the pipe never fills; forward each line to the starter."""
    try:
        for raw in stream:
            line = raw.rstrip("\r\n")
            lines.append(line)
            notify.put(line)
    finally:
        notify.put(None)


def start_server(
    data_dir: Path,
    *,
    profile: str = "rfc",
    smtps: bool = False,
    pop3s: bool = False,
    accounts: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
) -> MaillabServer:
    """Start `maillab serve` on port 0 and wait (START_TIMEOUT) for every listening line."""
    args = [
        *maillab_command(), "serve",
        "--profile", profile,
        "--host", host,
        "--smtp-port", "0",
        "--pop3-port", "0",
        "--data", str(data_dir),
    ]
    if smtps:
        args += ["--smtps-port", "0"]
    if pop3s:
        args += ["--pop3s-port", "0"]
    for spec in accounts:
        args += ["--account", spec]
    args += list(extra_args)
    expected = {"SMTP", "POP3"} | ({"SMTPS"} if smtps else set()) | ({"POP3S"} if pop3s else set())

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MAILLAB_DATA", None)
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=data_dir.parent,
    )
    lines: list[str] = []
    notify: "queue.Queue[str | None]" = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines, notify), daemon=True).start()

    ports: dict[str, int] = {}
    deadline = time.monotonic() + START_TIMEOUT
    problem = None
    while expected - ports.keys():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            problem = f"no listening lines for {sorted(expected - ports.keys())} within {START_TIMEOUT} s"
            break
        try:
            line = notify.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            problem = "maillab serve exited before listening"
            break
        match = _LISTENING.match(line)
        if match:
            name, shown_host, port, shown_profile = match.groups()
            assert shown_host == (f"[{host}]" if ":" in host else host), line
            assert shown_profile == profile or profile.endswith(".toml"), line
            ports[name] = int(port)
    if problem is not None:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)
        stderr = process.stderr.read() if process.stderr else ""
        pytest.fail(f"{problem} (exit {process.returncode})\nstdout: {lines}\nstderr: {stderr}")
    assert all(0 < p < 65536 for p in ports.values()), ports
    return MaillabServer(
        process=process,
        profile=profile,
        data_dir=data_dir,
        smtp_port=ports["SMTP"],
        pop3_port=ports["POP3"],
        smtps_port=ports.get("SMTPS"),
        pop3s_port=ports.get("POP3S"),
        output=lines,
        host=host,
    )


# --- a raw line client for byte-exact conversations ----------------------------------------------


class RawClient:
    """A loopback TCP client that reads whole replies and keeps every byte received."""

    def __init__(
        self, port: int, *, timeout: float = 5.0, tls_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls_context is not None:
            sock = tls_context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buffer = b""
        self.received = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode("utf-8") if isinstance(data, str) else data)

    def read_line(self) -> bytes:
        """One line including its CRLF (or LF)."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; partial data {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        line += b"\n"
        self.received += line
        return line

    def smtp_reply(self) -> bytes:
        """One SMTP reply, multi-line included, as the exact bytes sent."""
        out = b""
        while True:
            line = self.read_line()
            out += line
            if len(line) < 4 or line[3:4] != b"-":
                return out

    def pop3_multiline(self) -> bytes:
        """A POP3 status line plus its multi-line body up to and including '.\\r\\n'."""
        out = self.read_line()
        while True:
            line = self.read_line()
            out += line
            if line == b".\r\n":
                return out

    def exchange(self, line: str) -> bytes:
        """Send one CRLF-terminated SMTP command and return its reply's bytes."""
        self.send(line + "\r\n")
        return self.smtp_reply()

    def read_until_closed(self) -> bytes:
        data = self.buffer
        self.buffer = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
        self.received += data
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
