#!/usr/bin/env python3
"""Figures for the classroom limits (docs/security.md section 10), against `maillab serve`.

A script, not a test: it prints measurements of this machine. Loopback only, bounded::

    .venv/bin/python tests/benchmarks/lab_limits.py                 # all four, about a minute
    .venv/bin/python tests/benchmarks/lab_limits.py --only memory   # connections, guessing, memory, log

* connections: RLIMIT_NOFILE hard limit set to --fd-limit for the server (it raises its soft limit
  to it), idle connections from 127.0.0.2.. until every slot is held, then a fresh client from
  127.0.0.1: does it get 220, and how fast.
* guessing: 4 connections guess a password with AUTH PLAIN for --seconds, with the throttle off
  (auth_failure_delay = 0, auth_lockout_failures = 0: the old behaviour) and with the defaults.
* memory: peak RSS (VmHWM) of the server before and after a 2 MB message sent one byte per send()
  (TCP_NODELAY), and the same message sent at once.
* log: `maillab serve` (log_queue_lines = 1000) logging to a pipe nobody reads for --seconds: sessions
  served per second and the "N log lines dropped" the log reports once it is read again.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import re
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(rb"^(SMTP|POP3) listening on \S+:(\d+) ", re.MULTILINE)


def maillab() -> list[str]:
    script = Path(sys.executable).with_name("maillab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "simulator.cli"]


class Serve:
    """`maillab serve` on free ports with a profile extending rfc; stdout to a file or a pipe."""

    def __init__(self, root: Path, policies: str, *, fd_limit: int | None = None, quiet: bool = True, pipe: bool = False) -> None:
        profile = root / "lab.toml"
        profile.write_text(f'extends = "rfc"\nname = "lab"\n\n[policies]\n{policies}\n', encoding="utf-8")
        args = [*maillab(), "serve", "--data", str(root / "data"), "--smtp-port", "0", "--pop3-port", "0", "--profile", str(profile)]
        if quiet:
            args.append("--quiet")

        def limit() -> None:
            if fd_limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (64, fd_limit))

        self.read_fd, write_fd = os.pipe()
        if pipe:
            fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
        self.process = subprocess.Popen(args, stdout=write_fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=PROJECT, preexec_fn=limit)
        os.close(write_fd)
        self.seen = b""
        self.read_until(rb"POP3 listening on ")
        self.port = int(dict(LISTENING.findall(self.seen))[b"SMTP"])

    def read_until(self, needle: bytes, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while needle not in self.seen and time.monotonic() < end:
            if select.select([self.read_fd], [], [], 0.2)[0]:
                chunk = os.read(self.read_fd, 65536)
                if not chunk:
                    break
                self.seen += chunk
        if needle not in self.seen:
            raise RuntimeError(f"{needle!r} not seen: {self.seen[-500:]!r}")

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)

    def stop(self) -> None:
        self.process.terminate()
        end = time.monotonic() + 10
        while self.process.poll() is None and time.monotonic() < end:
            if select.select([self.read_fd], [], [], 0.2)[0] and not os.read(self.read_fd, 65536):
                break
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.read_fd)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def reply(sock: socket.socket) -> bytes:
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return reply(sock)


def connections(root: Path, fd_limit: int) -> None:
    serve = Serve(root, "max_connections_per_client = 8", fd_limit=fd_limit)
    held = []
    try:
        machine = 2
        while True:
            sockets = [connect(serve.port, f"127.0.0.{machine}") for _ in range(8)]
            greetings = [reply(s) for s in sockets]
            held.extend(sockets)
            if not all(g.startswith(b"220") for g in greetings):
                break
            machine += 1
            if machine > 250:
                break
        started = time.perf_counter()
        student = connect(serve.port)
        greeting = reply(student)
        latency = time.perf_counter() - started
        student.close()
        ok = sum(1 for s in held if select.select([s], [], [], 0)[0] == [])
        print(f"connections: fd limit {fd_limit}: {ok} idle connections held from {machine - 1} addresses; "
              f"a fresh client got {greeting[:3].decode()} in {latency * 1000:.1f} ms")
    finally:
        for s in held:
            s.close()
        serve.stop()


def guessing(root: Path, seconds: float) -> None:
    for label, policies in (("throttle off (before)", "auth_failure_delay = 0\nauth_lockout_failures = 0"), ("defaults (after)", "")):
        run = root / label.split()[0]
        run.mkdir()
        serve = Serve(run, policies)
        counts = {"535": 0, "other": 0}
        lock = threading.Lock()
        end = time.monotonic() + seconds

        def guess(worker: int) -> None:
            sock = connect(serve.port, "127.0.0.2")
            reply(sock)
            command(sock, b"EHLO guesser")
            n = 0
            while time.monotonic() < end:
                token = base64.b64encode(f"\0alice@example.com\0guess-{worker}-{n}".encode())
                answer = command(sock, b"AUTH PLAIN " + token)
                n += 1
                with lock:
                    counts["535" if answer.startswith(b"535") else "other"] += 1
                if not answer:
                    break
            sock.close()

        threads = [threading.Thread(target=guess, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
        sock = connect(serve.port, "127.0.0.2")
        reply(sock)
        command(sock, b"EHLO guesser")
        started = time.perf_counter()
        right = command(sock, b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.com\0alice-secret"))
        sock.close()
        serve.stop()
        print(f"guessing, {label}: {counts['535'] / seconds:,.1f} wrong guesses checked per second "
              f"({counts['535']} in {seconds:g} s from 4 connections, {counts['other']} refused unchecked); "
              f"then the right password: {right[:3].decode()} after {(time.perf_counter() - started) * 1000:.0f} ms")


def memory(root: Path, size: int) -> None:
    body = b"".join(b"line %07d of a message sent one byte per packet.....\r\n" % n for n in range(size // 56 + 1))[:size]
    body = body[: body.rfind(b"\r\n") + 2]
    for label, bytewise in (("at once", False), ("one byte per send()", True)):
        run = root / ("bytewise" if bytewise else "once")
        run.mkdir()
        serve = Serve(run, f"max_message_size = {4 * size}")
        sock = connect(serve.port)
        reply(sock)
        for line in (b"EHLO m", b"MAIL FROM:<alice@example.com>", b"RCPT TO:<bob@example.com>", b"DATA"):
            command(sock, line)
        serve.reset_peak()
        before = serve.peak_rss()
        started = time.perf_counter()
        if bytewise:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(body)):
                sock.send(body[i : i + 1])
        else:
            sock.sendall(body)
        answer = command(sock, b".")
        took = time.perf_counter() - started
        after = serve.peak_rss()
        sock.close()
        serve.stop()
        growth = after - before
        print(f"memory, {len(body) / 2**20:.1f} MiB {label}: {answer[:3].decode()} after {took:.1f} s; "
              f"peak RSS +{growth / 2**20:.1f} MiB ({growth / len(body):.2f} bytes per message byte)")


def log(root: Path, seconds: float) -> None:
    serve = Serve(root, "log_queue_lines = 1000", quiet=False, pipe=True)
    sessions = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:  # nobody reads the server's stdout meanwhile
            sock = connect(serve.port)
            if not reply(sock).startswith(b"220"):
                raise RuntimeError("no greeting")
            command(sock, b"QUIT")
            sock.close()
            sessions += 1
        serve.read_until(b"log lines dropped")
        dropped = sum(int(n) for n in re.findall(rb"(\d+) log lines dropped", serve.seen))
        print(f"log: stdout a 4 KiB pipe nobody read for {seconds:g} s: {sessions / seconds:,.0f} sessions/s served, "
              f"{dropped} log lines dropped and reported")
    finally:
        serve.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("connections", "guessing", "memory", "log"))
    parser.add_argument("--fd-limit", type=int, default=1024, help="the server's RLIMIT_NOFILE hard limit (default 1024)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the guessing and log runs")
    parser.add_argument("--size", type=int, default=2 * 2**20, help="message size for the memory run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maillab-limits-") as tmp:
        root = Path(tmp)
        for name, run in (
            ("connections", lambda d: connections(d, args.fd_limit)),
            ("guessing", lambda d: guessing(d, args.seconds)),
            ("memory", lambda d: memory(d, args.size)),
            ("log", lambda d: log(d, args.seconds)),
        ):
            if args.only in (None, name):
                (root / name).mkdir()
                run(root / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
