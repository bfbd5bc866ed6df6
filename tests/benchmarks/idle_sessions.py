#!/usr/bin/env python3
"""Idle sessions: memory per session and NOOP latency while `maillab serve` holds many of them.

A script, not a pytest test::

    .venv/bin/python tests/benchmarks/idle_sessions.py                    # 1000 SMTP + 1000 POP3
    .venv/bin/python tests/benchmarks/idle_sessions.py --sessions 5000 --protocols smtp

For each protocol: start a fresh `maillab serve --profile rfc --quiet` (transcripts on, as a class
runs it), warm it up with a few sessions, read its RSS (/proc/PID/status VmRSS), open `--sessions`
connections that each read the greeting (SMTP also sends EHLO) and then stay idle, read the RSS
again: (after - before) / sessions is the memory one idle session costs the server process
(socket buffers are kernel memory and not in RSS). The server's open file descriptors are
counted too (a session holds its socket and its transcript file).

Then, with every session still open, NOOP latency: (a) one extra client sends `--noops` NOOPs one
after another (POP3: after logging in); (b) a NOOP goes to every held session in turn (each one
wakes up once; held POP3 sessions are not logged in and answer -ERR, still one round trip); p50,
p99 and max of each. RLIMIT_NOFILE is raised (soft up to hard) for this script and the server.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import shutil
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_throughput import HOST, load_average, maillab_command, stop_process  # noqa: E402


def log(text: str) -> None:
    print(text, flush=True)


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_server(workdir: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    out = workdir / "server.out"
    with open(out, "wb") as handle:
        proc = subprocess.Popen(
            [*maillab_command(), "serve", "--profile", "rfc", "--host", HOST, "--smtp-port", "0", "--pop3-port", "0",
             "--data", str(workdir / "data"), "--quiet"],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 20
    while len(ports) < 2 and time.monotonic() < deadline:
        for line in out.read_text("utf-8", "replace").splitlines():
            for name in ("SMTP", "POP3"):
                if line.startswith(f"{name} listening on"):
                    ports[name] = int(line.split(" (", 1)[0].rsplit(":", 1)[1])
        if proc.poll() is not None:
            raise SystemExit(f"maillab did not start:\n{out.read_text()}")
        time.sleep(0.05)
    return proc, ports


def read_reply(sock: socket.socket, protocol: str) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
        if protocol == "POP3" and data.endswith(b"\r\n"):
            return data
        if protocol == "SMTP" and data.endswith(b"\r\n"):
            last = data[:-2].rsplit(b"\r\n", 1)[-1]
            if last[3:4] != b"-":
                return data


def open_session(port: int, protocol: str) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_reply(sock, protocol)
    if protocol == "SMTP":
        sock.sendall(b"EHLO idle.example\r\n")
        read_reply(sock, protocol)
    return sock


def noop(sock: socket.socket, protocol: str) -> float:
    start = time.perf_counter()
    sock.sendall(b"NOOP\r\n")
    reply = read_reply(sock, protocol)
    elapsed = time.perf_counter() - start
    if not reply[:1] in (b"2", b"+", b"-"):  # POP3 answers -ERR to NOOP before login: still a round trip
        raise RuntimeError(f"NOOP answered {reply!r}")
    return elapsed


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {pick(0.50):.2f} ms  p99 {pick(0.99):.2f} ms  max {ordered[-1] * 1000:.2f} ms  (n={len(ordered)})"


def measure(protocol: str, sessions: int, noops: int) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    proc, ports = start_server(workdir)
    port = ports[protocol]
    held: list[socket.socket] = []
    try:
        for _ in range(20):  # warm-up: lazy imports, first transcript directory, caches
            sock = open_session(port, protocol)
            noop(sock, protocol)
            sock.close()
        time.sleep(0.5)
        before, fds_before = rss_kib(proc.pid), open_fds(proc.pid)
        start = time.perf_counter()
        for _ in range(sessions):
            held.append(open_session(port, protocol))
        opened = time.perf_counter() - start
        time.sleep(1.0)
        after, fds_after = rss_kib(proc.pid), open_fds(proc.pid)
        probe = open_session(port, protocol)
        if protocol == "POP3":  # the probe logs in (NOOP is a TRANSACTION command); the held ones do not
            probe.sendall(b"USER bob@example.com\r\n")
            read_reply(probe, protocol)
            probe.sendall(b"PASS bob-secret\r\n")
            read_reply(probe, protocol)
        sequential = [noop(probe, protocol) for _ in range(noops)]
        across = [noop(sock, protocol) for sock in held]
        probe.close()
        return {
            "protocol": protocol,
            "sessions": sessions,
            "open_seconds": opened,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "per_session_kib": (after - before) / sessions,
            "fds_per_session": (fds_after - fds_before) / sessions,
            "sequential": sequential,
            "across": across,
        }
    finally:
        for sock in held:
            sock.close()
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--noops", type=int, default=2000, help="sequential NOOPs from the probe client")
    parser.add_argument("--protocols", default="smtp,pop3")
    args = parser.parse_args(argv)
    limit = raise_nofile(2 * args.sessions + 256)
    if limit < args.sessions + 64:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}: too low for {args.sessions} sessions (raise the hard limit)")
    log(f"Idle sessions: {args.sessions} per protocol, RLIMIT_NOFILE {limit}, {os.cpu_count()} CPUs, load average {load_average()}")
    for protocol in [p.strip().upper() for p in args.protocols.split(",") if p.strip()]:
        result = measure(protocol, args.sessions, args.noops)
        log(f"{protocol}: {args.sessions} idle sessions opened in {result['open_seconds']:.2f} s; server RSS "
            f"{result['rss_before_kib'] / 1024:.1f} MiB -> {result['rss_after_kib'] / 1024:.1f} MiB = "
            f"{result['per_session_kib']:.1f} KiB per session; {result['fds_per_session']:.2f} fds per session")  # fmt: skip
        log(f"  NOOP, one client, {args.noops} in a row:      {percentiles(result['sequential'])}")
        log(f"  NOOP, once on each of the {args.sessions} sessions: {percentiles(result['across'])}")
    log(f"load average now {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
