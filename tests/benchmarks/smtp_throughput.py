#!/usr/bin/env python3
"""SMTP throughput of `maillab serve` against aiosmtpd and Postfix's smtp-sink, driven by smtp-source.

A script, not a pytest test (it takes minutes and measures a machine, not a behaviour)::

    .venv/bin/python tests/benchmarks/smtp_throughput.py            # full matrix, 3 rounds (< 10 min)
    .venv/bin/python tests/benchmarks/smtp_throughput.py --quick    # 1 round, smaller counts (< 2 min)
    .venv/bin/python tests/benchmarks/smtp_throughput.py --rounds 5 --only maillab,aiosmtpd
    .venv/bin/python tests/benchmarks/smtp_throughput.py --sizes 1k --skip-concurrency   # 1 KB rows only
    .venv/bin/python tests/benchmarks/smtp_throughput.py --baseline /path/to/other/checkout  # A/B two trees

Servers, each started fresh for every run on a free 127.0.0.1 port and stopped in `finally`:

* maillab   -- `maillab serve --profile rfc ... --quiet` over a fresh temporary data directory;
               every message is fsynced into DATA/mailboxes/bob@example.com/new/ before the 250.
* aiosmtpd  -- aiosmtpd's Controller in a subprocess (this script, hidden `--serve-aiosmtpd`) with
               aiosmtpd's stock `aiosmtpd.handlers.Mailbox` handler: it parses the message and calls
               `mailbox.Maildir.add` (which fsyncs the file, not new/) in the event loop's thread.
               This is the reference of the 1.5x target.
* aiosmtpd-fsync -- the same Controller with a handler as durable as maillab's store: the file is
               fsynced (Maildir.add) and then new/ is fsynced; the blocking store runs in the event
               loop's thread pool, as maillab runs it in Twisted's.
* smtp-sink -- Postfix's C test server, which stores nothing: the ceiling of this machine/client.
* baseline  -- (`--baseline DIR`) `maillab serve` from another source tree (PYTHONPATH=DIR), to
               measure a change against the code before it in the same interleaved rounds.

Load: Postfix's smtp-source, `-s SESSIONS -l BYTES -m COUNT -f alice@example.com -t bob@example.com`.
smtp-source's default is one connection per message (its `-d` keeps the connection for the next
message); the default is kept, `--reuse-connections` adds `-d` to every run.

Rounds alternate between the servers (the order rotates every round) and the median msgs/s of the
rounds is reported, with each server's CPU time per message (user and system, from /proc/PID/stat
of the server and its children, read before and after the run): on a machine shared with other
work the rate moves with the neighbours, the CPU cost of a message much less. Run directories
are removed at the end, not between runs (see LEFT_FOR_THE_END). For maillab and aiosmtpd the stored messages are counted after each run and
must equal what smtp-source sent. Finally 300 concurrent sessions go to maillab once, checking
that smtp-source exits 0 and every message arrived.

Exit status: 0 when every run succeeded and nothing was lost (throughput targets are reported, not
enforced, unless --strict), 1 otherwise, 2 on a usage or setup problem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PROJECT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SENDER = "alice@example.com"
RECIPIENT = "bob@example.com"
SERVERS = ("maillab", "aiosmtpd", "aiosmtpd-fsync", "smtp-sink", "baseline")
DEFAULT_SERVERS = ("maillab", "aiosmtpd", "aiosmtpd-fsync", "smtp-sink")
TARGET_VS_AIOSMTPD = 1.5
TARGET_VS_SINK = 0.3
KB = 1024
MB = 1024 * 1024

START_TIMEOUT = 20.0  # seconds for a server to be ready
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGTERM, then SIGKILL
MIN_SOURCE_TIMEOUT = 60.0  # seconds an smtp-source run may take at least

# (sessions, message bytes) -> total messages: each run takes about 1-5 s on a 2-core machine.
# (-s 200 x 1 MB needs 200 messages for every session to send one.)
FULL_COUNTS = {
    (1, KB): 400,
    (20, KB): 1000,
    (200, KB): 1000,
    (1, MB): 60,
    (20, MB): 120,
    (200, MB): 200,
}
QUICK_COUNTS = {
    (1, KB): 150,
    (20, KB): 400,
    (200, KB): 400,
    (1, MB): 20,
    (20, MB): 40,
    (200, MB): 200,
}
CONCURRENT_SESSIONS = 300
CONCURRENT_COUNT = {"full": 900, "quick": 300}


def log(text: str) -> None:
    print(text, flush=True)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --- tools -------------------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.is_file()), None
    )


def maillab_command() -> list[str]:
    """The console script of this interpreter's venv (or the project's), else the module."""
    for candidate in (Path(sys.executable).with_name("maillab"), PROJECT / ".venv" / "bin" / "maillab"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-m", "simulator.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


#: Run directories, removed when the benchmark ends rather than after each run: on ext4 a file
#: created right after thousands were deleted costs more (the inode allocator steps over recently
#: freed inodes; `perf` showed a third of a server's CPU there), a cost a running mail server does
#: not pay and that would fall unequally on servers that create more files per message.
LEFT_FOR_THE_END: list[Path] = []


def remove_run_directories() -> None:
    while LEFT_FOR_THE_END:
        shutil.rmtree(LEFT_FOR_THE_END.pop(), ignore_errors=True)


def process_cpu(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process, its threads and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    # fields[0] is the state (field 3 of proc(5)): utime, stime, cutime, cstime are fields 14-17.
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + cutime) / tick, (stime + cstime) / tick


def tree_cpu(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of `pid` and every live descendant (Dovecot forks per login)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total: tuple[float, float] | None = None
    todo = [pid]
    while todo:
        current = todo.pop()
        cpu = process_cpu(current)
        if cpu is not None:
            total = cpu if total is None else (total[0] + cpu[0], total[1] + cpu[1])
        todo.extend(children.get(current, ()))
    return total


def count_files(directory: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(directory) if entry.is_file())
    except FileNotFoundError:
        return 0


def stop_process(proc: subprocess.Popen | None, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, wait, SIGKILL: the exit status (negative for a signal), None if never started."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
            return None  # did not stop on SIGTERM
    return proc.returncode


def listen_overflows() -> int | None:
    """Linux's TcpExt ListenOverflows (system-wide): SYNs dropped because an accept queue was full.

    Each drop costs the client a SYN retransmission (1 s, then 3 s, ...), so a server whose listen
    backlog overflows loses throughput while it sits idle.
    """
    try:
        rows = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(rows[::2], rows[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table["ListenOverflows"]) if "ListenOverflows" in table else None
    return None


def tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- servers -----------------------------------------------------------------------------------


class ServerError(RuntimeError):
    pass


class Server:
    """One server process on a free loopback port, over its own temporary directory."""

    name = "?"
    stores = True  # smtp-sink keeps nothing

    def __init__(self, tools: dict[str, str], keep: bool = False) -> None:
        self.tools = tools
        self.keep = keep
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.exit_status: int | None = None

    # subclasses: command(), wait_ready(), maildir_new()
    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    def maildir_new(self) -> Path | None:
        return None

    def stored(self) -> int | None:
        directory = self.maildir_new()
        return None if directory is None else count_files(directory)

    @property
    def output(self) -> Path:
        return self.workdir / "server.out"

    def start(self) -> None:
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between free_port() and bind()
            self.port = free_port()
            with open(self.output, "wb") as out:
                self.proc = subprocess.Popen(
                    self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
                )
            try:
                self.wait_ready(time.monotonic() + START_TIMEOUT)
                return
            except ServerError as error:
                last_error = error
                stop_process(self.proc)
                self.proc = None
        raise ServerError(f"{self.name} did not start: {last_error}\n{tail(self.output)}")

    def _wait_for_line(self, needle: str, deadline: float) -> str:
        while time.monotonic() < deadline:
            text = self.output.read_text("utf-8", "replace") if self.output.exists() else ""
            for line in text.splitlines():
                if needle in line:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"exited with status {self.proc.returncode}")
            time.sleep(0.02)
        raise ServerError(f"no {needle!r} line within {START_TIMEOUT:g} s")

    def _wait_for_connect(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"exited with status {self.proc.returncode}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.settimeout(2)
                    banner = sock.recv(512)
                    if banner.startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise ServerError(f"port {self.port} did not answer 220 within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        self.exit_status = stop_process(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        if not self.keep:
            LEFT_FOR_THE_END.append(self.workdir)

    def __enter__(self) -> "Server":
        try:
            self.start()
        except BaseException:
            self.stop()
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()


class MaillabServer(Server):
    name = "maillab"

    def command(self) -> list[str]:
        return [
            *maillab_command(), "serve", "--profile", "rfc", "--host", HOST,
            "--smtp-port", "0", "--pop3-port", "0", "--data", str(self.workdir / "data"), "--quiet",
        ]  # fmt: skip

    def start(self) -> None:
        # maillab picks its own free port (--smtp-port 0) and prints it: no race to retry.
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir
            )
        try:
            line = self._wait_for_line("SMTP listening on", time.monotonic() + START_TIMEOUT)
        except ServerError as error:
            raise ServerError(f"maillab did not start: {error}\n{tail(self.output)}") from None
        self.port = int(line.split(" (", 1)[0].rsplit(":", 1)[1])

    def maildir_new(self) -> Path:
        return self.workdir / "data" / "mailboxes" / RECIPIENT / "new"


class BaselineServer(MaillabServer):
    """maillab from another source tree (`--baseline DIR`), for A/B runs of a change."""

    name = "baseline"
    tree: Path | None = None

    def command(self) -> list[str]:
        assert self.tree is not None
        return ["env", f"PYTHONPATH={self.tree}", sys.executable, "-m", "simulator.cli", *super().command()[1:]]


class AiosmtpdServer(Server):
    name = "aiosmtpd"
    handler = "mailbox"  # aiosmtpd.handlers.Mailbox, as shipped

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--serve-aiosmtpd", str(self.workdir / "maildir"),
                "--handler", self.handler, "--port", str(self.port)]  # fmt: skip

    def wait_ready(self, deadline: float) -> None:
        self._wait_for_line("READY", deadline)

    def maildir_new(self) -> Path:
        return self.workdir / "maildir" / "new"


class AiosmtpdFsyncServer(AiosmtpdServer):
    name = "aiosmtpd-fsync"
    handler = "fsync"


class SinkServer(Server):
    name = "smtp-sink"
    stores = False

    def command(self) -> list[str]:
        cmd = [self.tools["smtp-sink"]]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        # -m: simultaneous connections handled (default 256); the listen backlog is 1000.
        return [*cmd, "-m", "1000", f"{HOST}:{self.port}", "1000"]

    def wait_ready(self, deadline: float) -> None:
        self._wait_for_connect(deadline)


SERVER_CLASSES: dict[str, type[Server]] = {
    "maillab": MaillabServer,
    "aiosmtpd": AiosmtpdServer,
    "aiosmtpd-fsync": AiosmtpdFsyncServer,
    "smtp-sink": SinkServer,
    "baseline": BaselineServer,
}


# --- the load ----------------------------------------------------------------------------------


@dataclass
class SourceResult:
    elapsed: float
    returncode: int | None  # None: timed out (and was killed)
    stderr: str
    overflows: int | None = None  # listen-queue overflows (SYN drops) during the run

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class ConnectionSampler(threading.Thread):
    """Peak number of ESTABLISHED server-side sockets on a port, from /proc/net/tcp."""

    def __init__(self, port: int, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.port_hex = f":{port:04X}"
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                with open("/proc/net/tcp") as table:
                    next(table)
                    count = sum(
                        1 for row in table
                        if (fields := row.split()) and fields[1].endswith(self.port_hex) and fields[3] == "01"
                    )  # fmt: skip
            except OSError:
                return
            self.peak = max(self.peak, count)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=2)
        return self.peak


def run_source(
    tool: str, port: int, sessions: int, size: int, count: int, *, reuse: bool, timeout: float
) -> SourceResult:
    args = [tool, "-s", str(sessions), "-l", str(size), "-m", str(count), "-f", SENDER, "-t", RECIPIENT]
    if reuse:
        args.append("-d")
    args.append(f"{HOST}:{port}")
    overflows_before = listen_overflows()
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        _, err = proc.communicate(timeout=timeout)
        elapsed = time.perf_counter() - start
        overflows_after = listen_overflows()
        overflows = None if None in (overflows_before, overflows_after) else overflows_after - overflows_before
        return SourceResult(elapsed, proc.returncode, err.decode("utf-8", "replace").strip(), overflows)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=STOP_TIMEOUT)
        return SourceResult(time.perf_counter() - start, None, f"timed out after {timeout:g} s " + err.decode())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def source_timeout(count: int, size: int) -> float:
    """Generous: even 20 msgs/s (or 2 MB/s) finishes; a hung run cannot stall the benchmark."""
    return max(MIN_SOURCE_TIMEOUT, count / 20, count * size / (2 * MB))


@dataclass
class Run:
    server: str
    rate: float | None
    elapsed: float
    sent: int
    stored: int | None
    problem: str | None = None
    overflows: int | None = None
    cpu: tuple[float, float] | None = None  # (user, system) seconds the server spent on the run

    def cpu_per_message(self) -> tuple[float, float] | None:
        """(user, system) milliseconds of server CPU per message."""
        if self.cpu is None or not self.sent:
            return None
        return self.cpu[0] * 1000 / self.sent, self.cpu[1] * 1000 / self.sent


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        rates = [r.rate for r in self.runs if r.rate is not None]
        return statistics.median(rates) if rates else None

    @property
    def cpu_median(self) -> tuple[float, float] | None:
        """Median (user, system) ms per message over the successful runs."""
        costs = [c for r in self.runs if r.rate is not None and (c := r.cpu_per_message()) is not None]
        if not costs:
            return None
        return statistics.median(c[0] for c in costs), statistics.median(c[1] for c in costs)

    @property
    def lost(self) -> int:
        return sum(r.sent - r.stored for r in self.runs if r.stored is not None and r.rate is not None)

    @property
    def problems(self) -> list[str]:
        return [r.problem for r in self.runs if r.problem]


def measure(
    name: str, tools: dict[str, str], sessions: int, size: int, count: int, *, reuse: bool, keep: bool
) -> Run:
    try:
        with SERVER_CLASSES[name](tools, keep=keep) as server:
            assert server.proc is not None
            cpu_before = tree_cpu(server.proc.pid)
            result = run_source(
                tools["smtp-source"], server.port, sessions, size, count,
                reuse=reuse, timeout=source_timeout(count, size),
            )  # fmt: skip
            cpu_after = tree_cpu(server.proc.pid)
            stored = server.stored()
            alive = server.proc is not None and server.proc.poll() is None
    except ServerError as error:
        return Run(name, None, 0.0, count, None, " | ".join(str(error).splitlines()[-6:]))
    problem = None
    if not result.ok:
        status = "timed out" if result.returncode is None else f"exit {result.returncode}"
        problem = f"smtp-source {status}: {result.stderr[-300:]}"
    elif not alive:
        problem = f"{name} died during the run"
    elif stored is not None and stored != count:
        problem = f"stored {stored} of {count} messages"
    if name == "maillab" and server.exit_status not in (0, None) and problem is None:
        problem = f"maillab exited with status {server.exit_status} on SIGTERM"
    rate = count / result.elapsed if result.ok else None
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    return Run(name, rate, result.elapsed, count, stored, problem, result.overflows, cpu)


# --- reporting ---------------------------------------------------------------------------------


def size_label(size: int) -> str:
    return f"{size // MB} MB" if size >= MB and size % MB == 0 else f"{size // KB} KB" if size % KB == 0 else f"{size} B"


def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def fmt_cpu(cost: tuple[float, float] | None) -> str:
    """'u 1.23 + s 2.34 ms' of CPU per message."""
    return "-" if cost is None else f"u{cost[0]:.2f}+s{cost[1]:.2f} ms"


def fmt_ratio(value: float | None, target: float | None) -> str:
    if value is None:
        return "-"
    if target is None:
        return f"{value:.2f}"
    return f"{value:.2f} {'ok' if value >= target else 'LOW'}"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    aligned = lambda row: "  ".join(  # noqa: E731
        str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i]) for i, cell in enumerate(row)
    )
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([aligned(header), rule, *(aligned(r) for r in rows)])


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, smaller message counts (< 2 min)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per configuration (default 3, --quick 1)")
    parser.add_argument("--only", default=",".join(DEFAULT_SERVERS), help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--sizes", default="1k,1m", help="message sizes to run: 1k, 1m or both (default 1k,1m)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count (e.g. 0.5)")
    parser.add_argument("--baseline", type=Path, help="another source tree: adds its maillab as server 'baseline'")
    parser.add_argument("--reuse-connections", action="store_true", help="smtp-source -d: many messages per connection")
    parser.add_argument("--skip-concurrency", action="store_true", help="skip the 300-session check")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a throughput target is missed too")
    # internal: the aiosmtpd server process
    parser.add_argument("--serve-aiosmtpd", metavar="MAILDIR", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--handler", choices=["mailbox", "fsync"], default="mailbox", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SERVERS]
    if unknown or not chosen:
        parser.error(f"--only takes a subset of {','.join(SERVERS)}, got {args.only!r}")
    if args.baseline is not None and "baseline" not in chosen:
        chosen.append("baseline")
    if "baseline" in chosen:
        if args.baseline is None or not (args.baseline / "simulator" / "cli").exists() and not (args.baseline / "simulator" / "cli.py").exists():
            parser.error("server 'baseline' needs --baseline DIR, a maillab source tree")
        BaselineServer.tree = args.baseline.resolve()
    args.servers = [s for s in SERVERS if s in chosen]
    sizes = {"1k": KB, "1m": MB}
    wanted = [v.strip().lower() for v in args.sizes.split(",") if v.strip()]
    if not wanted or any(v not in sizes for v in wanted):
        parser.error(f"--sizes takes 1k, 1m or both, got {args.sizes!r}")
    args.size_set = {sizes[v] for v in wanted}
    if args.scale <= 0:
        parser.error("--scale must be positive")
    return args


def check_setup(servers: list[str]) -> dict[str, str]:
    tools: dict[str, str] = {}
    needed = ["smtp-source"] + (["smtp-sink"] if "smtp-sink" in servers else [])
    for name in needed:
        path = find_tool(name)
        if path is None:
            raise SystemExit(f"{name} not found (Debian: apt-get install postfix)")
        tools[name] = path
    if any(s.startswith("aiosmtpd") for s in servers):
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:
            raise SystemExit(f"aiosmtpd is not installed for {sys.executable} (pip install -e '.[bench]')") from None
    return tools


def benchmark(args: argparse.Namespace) -> int:
    tools = check_setup(args.servers)
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    configs = [
        ((sessions, size), max(sessions, round(count * args.scale)))
        for (sessions, size), count in counts.items()
        if size in args.size_set
    ]
    cells: dict[tuple[int, int], dict[str, Cell]] = {key: {s: Cell() for s in args.servers} for key, _ in configs}
    began = time.monotonic()
    mode = "one connection per message (smtp-source default)" if not args.reuse_connections else "smtp-source -d"
    log(f"SMTP throughput: {', '.join(args.servers)}; {args.rounds} round(s); {mode}; "
        f"{os.cpu_count()} CPUs; load average {load_average()}")  # fmt: skip

    for round_number in range(args.rounds):
        for index, ((sessions, size), count) in enumerate(configs):
            shift = (round_number + index) % len(args.servers)
            order = args.servers[shift:] + args.servers[:shift]  # alternate who goes first
            for name in order:
                run = measure(name, tools, sessions, size, count, reuse=args.reuse_connections, keep=args.keep)
                cells[(sessions, size)][name].runs.append(run)
                stored = "" if run.stored is None else f"  stored {run.stored}/{run.sent}"
                if run.overflows:
                    stored += f"  SYN drops (listen queue full) {run.overflows}"
                status = f"  PROBLEM: {run.problem}" if run.problem else ""
                log(f"  round {round_number + 1}  -s {sessions:<3} {size_label(size):>5} x {count:<5} "
                    f"{name:<14} {fmt_rate(run.rate):>7} msgs/s  {fmt_cpu(run.cpu_per_message()):>17}"
                    f"  ({run.elapsed:6.2f} s){stored}{status}")  # fmt: skip

    concurrency: dict[str, object] | None = None
    if "maillab" in args.servers and not args.skip_concurrency:
        concurrency = concurrent_check(tools, CONCURRENT_COUNT["quick" if args.quick else "full"], args)

    # --- the table ---
    header = ["config (sessions, size, msgs)"]
    for name in args.servers:
        header.append(f"{name} msgs/s")
        header.append("CPU/msg")
    if "maillab" in args.servers and "aiosmtpd" in args.servers:
        header.append(f"ml/aiosmtpd (>={TARGET_VS_AIOSMTPD})")
    if "maillab" in args.servers and "aiosmtpd-fsync" in args.servers:
        header.append("ml/aiosmtpd-fsync")
    if "maillab" in args.servers and "baseline" in args.servers:
        header.append("ml/baseline")
    if "maillab" in args.servers and "smtp-sink" in args.servers:
        header.append(f"ml/sink (>={TARGET_VS_SINK})")
    storing = [s for s in args.servers if SERVER_CLASSES[s].stores]
    if storing:
        header.append("stored/sent (" + ", ".join(storing) + ")")
    header.append("SYN drops (" + ", ".join(args.servers) + ")")
    rows = []
    ratios_aio: list[float] = []
    ratios_sink: list[float] = []
    failures = 0
    lost_total = 0
    for (sessions, size), count in configs:
        row_cells = cells[(sessions, size)]
        row = [f"-s {sessions} x {size_label(size)} ({count})"]
        medians = {name: row_cells[name].median for name in args.servers}
        for name in args.servers:
            row += [fmt_rate(medians[name]), fmt_cpu(row_cells[name].cpu_median)]
        ml = medians.get("maillab")
        if "maillab" in args.servers and "aiosmtpd" in args.servers:
            value = ml / medians["aiosmtpd"] if ml and medians["aiosmtpd"] else None
            if value is not None:
                ratios_aio.append(value)
            row.append(fmt_ratio(value, TARGET_VS_AIOSMTPD))
        for other in ("aiosmtpd-fsync", "baseline"):
            if "maillab" in args.servers and other in args.servers:
                row.append(fmt_ratio(ml / medians[other] if ml and medians[other] else None, None))
        if "maillab" in args.servers and "smtp-sink" in args.servers:
            value = ml / medians["smtp-sink"] if ml and medians["smtp-sink"] else None
            if value is not None:
                ratios_sink.append(value)
            row.append(fmt_ratio(value, TARGET_VS_SINK))
        if storing:
            parts = []
            for name in storing:
                runs = row_cells[name].runs
                stored = sum(r.stored or 0 for r in runs)
                sent = sum(r.sent for r in runs)
                parts.append(f"{stored}/{sent}")
                lost_total += row_cells[name].lost
            row.append(", ".join(parts))
        row.append(", ".join(
            str(sum(r.overflows or 0 for r in row_cells[name].runs)) for name in args.servers
        ))  # fmt: skip
        for name in args.servers:
            failures += len(row_cells[name].problems)
        rows.append(row)

    log("")
    log(f"Median msgs/s over {args.rounds} round(s) ({mode}; message size = smtp-source -l payload;"
        " CPU/msg: median server CPU time per message, u = user, s = system):")
    log(table(rows, header))
    if concurrency is not None:
        log("")
        log(f"{CONCURRENT_SESSIONS} concurrent sessions -> maillab: {concurrency['text']}")
    problems = [(key, name, p) for key, row in cells.items() for name, cell in row.items() for p in cell.problems]
    if problems:
        log("")
        log("Problems:")
        for (sessions, size), name, problem in problems:
            log(f"  -s {sessions} x {size_label(size)} {name}: {problem}")

    # --- summary ---
    parts = []
    missed = 0
    if ratios_aio:
        below = sum(1 for r in ratios_aio if r < TARGET_VS_AIOSMTPD)
        missed += below
        parts.append(f"maillab/aiosmtpd {min(ratios_aio):.2f}-{max(ratios_aio):.2f} "
                     f"(target >={TARGET_VS_AIOSMTPD}: {len(ratios_aio) - below}/{len(ratios_aio)} met)")  # fmt: skip
    if ratios_sink:
        below = sum(1 for r in ratios_sink if r < TARGET_VS_SINK)
        missed += below
        parts.append(f"maillab/smtp-sink {min(ratios_sink):.2f}-{max(ratios_sink):.2f} "
                     f"(target >={TARGET_VS_SINK}: {len(ratios_sink) - below}/{len(ratios_sink)} met)")  # fmt: skip
    if concurrency is not None:
        parts.append(f"{CONCURRENT_SESSIONS} sessions {'PASS' if concurrency['ok'] else 'FAIL'}")
        failures += 0 if concurrency["ok"] else 1
    parts.append(f"lost messages {lost_total}")
    parts.append(f"failed runs {failures}")
    parts.append(f"{time.monotonic() - began:.0f} s, load average now {load_average()}")
    log("")
    log("SUMMARY: " + "; ".join(parts))
    if failures or lost_total:
        return 1
    return 1 if args.strict and missed else 0


def concurrent_check(tools: dict[str, str], count: int, args: argparse.Namespace) -> dict[str, object]:
    sampler: ConnectionSampler | None = None
    try:
        with MaillabServer(tools, keep=args.keep) as server:
            sampler = ConnectionSampler(server.port)
            sampler.start()
            result = run_source(
                tools["smtp-source"], server.port, CONCURRENT_SESSIONS, KB, count,
                reuse=args.reuse_connections, timeout=source_timeout(count, KB) + 60,
            )  # fmt: skip
            peak = sampler.stop()
            stored = server.stored()
            alive = server.proc is not None and server.proc.poll() is None
    except ServerError as error:
        return {"ok": False, "text": "FAIL: " + " | ".join(str(error).splitlines()[-6:])}
    finally:
        if sampler is not None:
            sampler.stop()
    ok = result.ok and alive and stored == count and server.exit_status == 0
    rate = f"{count / result.elapsed:,.0f} msgs/s" if result.ok else "-"
    status = "timed out" if result.returncode is None else str(result.returncode)
    text = (
        f"{'PASS' if ok else 'FAIL'}: smtp-source -s {CONCURRENT_SESSIONS} -m {count} -l 1024 exit {status}, "
        f"stored {stored}/{count}, {result.elapsed:.2f} s ({rate}), peak {peak} concurrent connections, "
        f"{result.overflows if result.overflows is not None else '?'} SYN drops (listen queue full), "
        f"maillab exit {server.exit_status} on SIGTERM"
    )
    if result.stderr and not result.ok:
        text += f"\n    smtp-source: {result.stderr[-300:]}"
    log(f"  concurrency: {text}")
    return {"ok": ok, "text": text}


# --- the aiosmtpd server process ---------------------------------------------------------------


def serve_aiosmtpd(maildir_path: str, port: int, handler_name: str) -> int:
    """aiosmtpd with its stock Mailbox handler ("mailbox") or one as durable as maillab's store
    ("fsync"); runs until SIGTERM."""
    import asyncio
    import email.utils
    import mailbox

    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    class FsyncMaildirHandler:
        """Store each message in a Maildir: file fsynced (Maildir.add does), then new/ fsynced."""

        def __init__(self, path: str) -> None:
            self.maildir = mailbox.Maildir(path, factory=None, create=True)
            self.new_dir = os.path.join(path, "new")

        def store(self, content: bytes) -> str:
            for attempt in range(10):
                try:
                    key = self.maildir.add(content)  # writes tmp/, fsyncs, links into new/
                    break
                except mailbox.ExternalClashError:  # Maildir's name counter is not thread-safe
                    if attempt == 9:
                        raise
            fd = os.open(self.new_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)  # the new/ entry survives a crash, as in maillab's store
            finally:
                os.close(fd)
            return key

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
            if not address.lower().endswith("@example.com"):
                return "554 5.7.1 Relay access denied"
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 Ok"

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            trace = (
                f"Return-Path: <{envelope.mail_from}>\r\n"
                f"Received: from {session.host_name} ({session.peer[0]})\r\n"
                f"\tby mail.example.com (aiosmtpd) with ESMTP\r\n"
                f"\tfor <{envelope.rcpt_tos[0]}>; {email.utils.formatdate(localtime=True)}\r\n"
            ).encode()
            content = envelope.original_content or envelope.content or b""
            loop = asyncio.get_running_loop()
            key = await loop.run_in_executor(None, self.store, trace + content)
            return f"250 2.0.0 Ok: queued as {key}"

    handler = FsyncMaildirHandler(maildir_path) if handler_name == "fsync" else Mailbox(maildir_path)
    controller = Controller(
        handler, hostname=HOST, port=port, server_hostname="mail.example.com", data_size_limit=10240000,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    controller.start()
    try:
        print(f"READY {HOST}:{port}", flush=True)
        while not stopped.wait(1):
            pass
    finally:
        controller.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_aiosmtpd:
        return serve_aiosmtpd(args.serve_aiosmtpd, args.port, args.handler)
    # SIGTERM ends the benchmark like Ctrl-C: every `finally` stops its server.
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return benchmark(args)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        remove_run_directories()


if __name__ == "__main__":
    sys.exit(main())
