#!/usr/bin/env python3
"""A classroom under load: 200 students on one `maillab serve --classroom`, sending and fetching.

A script, not a pytest test (it measures a machine)::

    .venv/bin/python tests/benchmarks/classroom_load.py                  # 200 students, 60 s
    .venv/bin/python tests/benchmarks/classroom_load.py --students 50 --duration 10
    .venv/bin/python tests/benchmarks/classroom_load.py --students 1000 --duration 60   # the 1,000 target

What it does, all on 127.0.0.1, and it stops by itself:

1. `maillab classroom init` a fresh class of N students in a temporary folder;
2. starts `maillab serve --classroom DIR --smtp-port 0 --pop3-port 0 --quiet` as a subprocess
   (the per-client connection limit stays on: every student speaks from its own loopback
   address 127.1.x.y, as every student has their own machine);
3. every student, for DURATION seconds, in a loop: an SMTP session (EHLO, AUTH PLAIN, MAIL FROM
   themselves, RCPT TO their partner, DATA, a message with a unique subject, QUIT), a POP3
   session (USER, PASS, STAT, RETR and DELE every message, QUIT), then a pause of THINK seconds
   (x0.5..1.5, random) before the next round;
4. after the deadline, every student fetches what is left (not timed), and every message the
   server accepted (250 after the dot) must have been fetched exactly once by its recipient.

Reported: replies per second, latency per command (from sending the line to the end of its
reply, at the client) p50/p95/p99/max, the server's peak RSS (VmHWM of /proc/PID/status, sampled
VmRSS too), messages accepted / fetched / lost, unexpected replies.

Targets (2-core machine): p99 < 100 ms, nothing lost, no unexpected reply, RSS < 300 MB.
Exit status 0 when met, 1 when not, 2 on a setup problem.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT))

HOST = "127.0.0.1"
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 300.0
REPLY_TIMEOUT = 30.0


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    when: list[float] = field(default_factory=list)  # monotonic time of each timed reply
    replies: int = 0
    unexpected: list[str] = field(default_factory=list)
    started: float = 0.0
    accepted: set[str] = field(default_factory=set)
    fetched: list[str] = field(default_factory=list)
    smtp_sessions: int = 0
    pop3_sessions: int = 0
    connect_failures: int = 0


class Line:
    """A line client over asyncio streams, timing every command."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: Stats, timed: bool) -> None:
        self.reader, self.writer, self.stats, self.timed = reader, writer, stats, timed

    @classmethod
    async def open(cls, port: int, source: str, stats: Stats, timed: bool = True) -> "Line":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, local_addr=(source, 0), limit=1 << 20), REPLY_TIMEOUT
        )
        return cls(reader, writer, stats, timed)

    async def line(self) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
        if not raw:
            raise ConnectionError("server closed the connection")
        return raw.rstrip(b"\r\n").decode("utf-8", "replace")

    async def smtp_reply(self) -> str:
        text = await self.line()
        while len(text) > 3 and text[3] == "-":
            text = await self.line()
        return text

    async def pop3_multiline(self) -> list[str]:
        lines = [await self.line()]
        if lines[0].startswith("+OK"):
            while lines[-1] != ".":
                lines.append(await self.line())
        return lines

    async def command(self, text: str, read, expect: tuple[str, ...]):
        """Send `text`, read its reply with `read`, time it; note a reply not starting with `expect`."""
        started = time.perf_counter()
        self.writer.write(text.encode("utf-8") + b"\r\n")
        result = await read()
        if self.timed:
            self.stats.latencies.append(time.perf_counter() - started)
            self.stats.when.append(time.monotonic())
        self.stats.replies += 1
        first = result[0] if isinstance(result, list) else result
        if not first.startswith(expect):
            self.stats.unexpected.append(f"{text.split()[0] if text.strip() else text!r} -> {first}")
        return result

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, asyncio.TimeoutError):
            pass


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


async def send_one(ports: dict[str, int], source: str, me, partner, number: int, stats: Stats) -> None:
    conn = await Line.open(ports["SMTP"], source, stats)
    try:
        greeting = await conn.smtp_reply()
        if not greeting.startswith("220"):
            stats.unexpected.append(f"greeting -> {greeting}")
            return
        stats.smtp_sessions += 1
        await conn.command("EHLO student-laptop", conn.smtp_reply, ("250",))
        await conn.command(f"AUTH PLAIN {b64(chr(0) + me.address + chr(0) + me.secret)}", conn.smtp_reply, ("235",))
        await conn.command(f"MAIL FROM:<{me.address}>", conn.smtp_reply, ("250",))
        await conn.command(f"RCPT TO:<{partner.address}>", conn.smtp_reply, ("250",))
        await conn.command("DATA", conn.smtp_reply, ("354",))
        subject = f"load {me.id} {number}"
        body = (
            f"From: <{me.address}>\r\nTo: <{partner.address}>\r\nSubject: {subject}\r\n\r\n"
            "Hello from the classroom load test.\r\nA second line of text, like a student's.\r\n"
        )
        conn.writer.write(body.encode())
        reply = await conn.command(".", conn.smtp_reply, ("250",))
        if reply.startswith("250"):
            stats.accepted.add(subject)
        await conn.command("QUIT", conn.smtp_reply, ("221",))
    finally:
        await conn.close()


async def fetch_all(ports: dict[str, int], source: str, me, stats: Stats, timed: bool = True) -> None:
    conn = await Line.open(ports["POP3"], source, stats, timed)
    try:
        greeting = await conn.line()
        if not greeting.startswith("+OK"):
            stats.unexpected.append(f"pop3 greeting -> {greeting}")
            return
        stats.pop3_sessions += 1
        await conn.command(f"USER {me.address}", conn.line, ("+OK",))
        reply = await conn.command(f"PASS {me.secret}", conn.line, ("+OK",))
        if not reply.startswith("+OK"):
            return
        stat = await conn.command("STAT", conn.line, ("+OK",))
        count = int(stat.split()[1]) if stat.startswith("+OK") else 0
        for number in range(1, count + 1):
            lines = await conn.command(f"RETR {number}", conn.pop3_multiline, ("+OK",))
            subject = next((line[len("Subject: "):] for line in lines if line.startswith("Subject: ")), None)
            if subject is not None:
                stats.fetched.append(subject)
            await conn.command(f"DELE {number}", conn.line, ("+OK",))
        await conn.command("QUIT", conn.line, ("+OK",))
    finally:
        await conn.close()


async def student(ports, index: int, me, partner, deadline: float, think: float, stats: Stats) -> None:
    source = f"127.1.{index // 250}.{index % 250 + 1}"
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0, think))  # students do not all press Enter at once
    number = 0
    while time.monotonic() < deadline:
        number += 1
        try:
            await send_one(ports, source, me, partner, number, stats)
            await fetch_all(ports, source, me, stats)
        except (OSError, ConnectionError, asyncio.TimeoutError) as error:
            stats.connect_failures += 1
            stats.unexpected.append(f"{me.id}: {type(error).__name__}: {error}")
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def drain(ports, config, stats: Stats) -> None:
    """After the deadline: everyone fetches what is left (not timed), a few at a time."""
    gate = asyncio.Semaphore(20)

    async def one(index: int, me) -> None:
        async with gate:
            await fetch_all(ports, f"127.1.{index // 250}.{index % 250 + 1}", me, stats, timed=False)

    await asyncio.gather(*(one(i, s) for i, s in enumerate(config.students)))


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.stopped = threading.Event()

    def read(self, key: str) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.peak_kb = max(self.peak_kb, self.read("VmRSS"))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0


def start_server(class_dir: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    exe = PROJECT / ".venv" / "bin" / "maillab"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "simulator.cli"]
    server = subprocess.Popen(
        command + ["serve", "--classroom", str(class_dir), "--smtp-port", "0", "--pop3-port", "0", "--quiet"],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while len(ports) < 2:
        line = server.stdout.readline()
        if not line or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server did not start: {server.stderr.read()}")
        if line.startswith(("SMTP listening on", "POP3 listening on")):
            ports[line.split()[0]] = int(line.split()[3].rsplit(":", 1)[1])
    threading.Thread(target=server.stdout.read, daemon=True).start()  # keep the pipe drained
    threading.Thread(target=server.stderr.read, daemon=True).start()
    return server, ports


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def run_load(config, ports, duration: float, think: float, stats: Stats) -> float:
    deadline = time.monotonic() + duration
    started = stats.started = time.monotonic()
    students = config.students
    tasks = [
        asyncio.create_task(student(ports, i, s, students[(i + 1) % len(students)], deadline, think, stats))
        for i, s in enumerate(students)
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), duration + 90)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--think", type=float, default=2.0, help="mean pause between a student's rounds (default 2 s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary class folder")
    parser.add_argument("--where", type=Path, default=None, help="folder for the temporary class (default: the system's temp dir)")
    args = parser.parse_args()
    from simulator.classroom.config import MAX_STUDENTS, init_class

    if not 1 <= args.students <= MAX_STUDENTS or args.duration <= 0:
        print(f"classroom_load: --students 1..{MAX_STUDENTS} and a positive --duration", file=sys.stderr)
        return 2

    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.2f} before the start: other processes share the CPU, figures will suffer", flush=True)

    root = Path(tempfile.mkdtemp(prefix="maillab-classload-", dir=args.where))
    server = None
    sampler = None
    try:
        config = init_class(root / "class", students=args.students, domain="class.test", server_host=HOST)
        server, ports = start_server(config.dir)
        sampler = RssSampler(server.pid)
        sampler.start()
        idle_kb = sampler.read("VmRSS")
        print(f"server pid {server.pid}: SMTP {ports['SMTP']}, POP3 {ports['POP3']}, RSS at rest {idle_kb / 1024:.0f} MB", flush=True)
        print(f"{args.students} students, {args.duration:g} s, think {args.think:g} s ...", flush=True)
        stats = Stats()
        cpu_before = sampler.cpu_seconds()
        client_before = time.process_time()
        elapsed = asyncio.run(run_load(config, ports, args.duration, args.think, stats))
        server_cpu = sampler.cpu_seconds() - cpu_before
        client_cpu = time.process_time() - client_before
        timed_replies = stats.replies
        asyncio.run(drain(ports, config, stats))
        hwm_kb = sampler.read("VmHWM")
    except RuntimeError as error:
        print(f"classroom_load: {error}", file=sys.stderr)
        return 2
    finally:
        if sampler is not None:
            sampler.stopped.set()
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"class folder kept: {root / 'class'}")

    latencies_ms = [value * 1000 for value in stats.latencies]
    p99 = percentile(latencies_ms, 0.99)
    fetched = set(stats.fetched)
    lost = stats.accepted - fetched
    duplicates = len(stats.fetched) - len(fetched)
    rss_mb = max(hwm_kb, sampler.peak_kb if sampler else 0) / 1024
    print()
    print(f"sessions        {stats.smtp_sessions} SMTP + {stats.pop3_sessions} POP3 in {elapsed:.1f} s")
    print(f"replies         {timed_replies} timed, {timed_replies / elapsed:.0f} per second")
    print(
        f"latency (ms)    p50 {percentile(latencies_ms, 0.5):.1f}  p95 {percentile(latencies_ms, 0.95):.1f}  "
        f"p99 {p99:.1f}  max {max(latencies_ms, default=0):.1f}  mean {statistics.fmean(latencies_ms) if latencies_ms else 0:.1f}"
    )
    windows: dict[int, list[float]] = {}
    for at, value in zip(stats.when, latencies_ms):
        windows.setdefault(int((at - stats.started) // 10), []).append(value)
    print("p99 per 10 s    " + "  ".join(f"{percentile(windows[k], 0.99):.0f}" for k in sorted(windows)))
    print(f"messages        {len(stats.accepted)} accepted, {len(fetched)} fetched, {len(lost)} lost, {duplicates} fetched twice")
    print(f"server RSS      peak {rss_mb:.0f} MB (at rest {idle_kb / 1024:.0f} MB)")
    print(
        f"CPU             server {server_cpu:.1f} s ({100 * server_cpu / elapsed:.0f}% of one core), "
        f"this client {client_cpu:.1f} s ({100 * client_cpu / elapsed:.0f}%), in {elapsed:.1f} s"
    )
    print(f"unexpected      {len(stats.unexpected)} replies/errors" + (f", first: {stats.unexpected[:3]}" if stats.unexpected else ""))
    ok = p99 < TARGET_P99_MS and not lost and not duplicates and not stats.unexpected and rss_mb < TARGET_RSS_MB
    print(f"targets         p99 < {TARGET_P99_MS:g} ms, nothing lost, RSS < {TARGET_RSS_MB:g} MB: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
