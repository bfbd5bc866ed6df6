#!/usr/bin/env python3
"""POP3 retrieval throughput: maillab against Dovecot's POP3 server on the same Maildir content.

A script, not a pytest test (it measures a machine, not a behaviour)::

    .venv/bin/python tests/benchmarks/pop3_throughput.py                  # 1 KB and 100 KB, 3 rounds
    .venv/bin/python tests/benchmarks/pop3_throughput.py --sizes 4096 --messages 1000 --rounds 5
    .venv/bin/python tests/benchmarks/pop3_throughput.py --only maillab --clients poplib
    .venv/bin/python tests/benchmarks/pop3_throughput.py --baseline /path/to/other/checkout   # A/B

Content: for each of `--sizes` (default 1 KB with 1,000 messages and 100 KB with 200, or
`--messages` of each), messages of about that many octets (lines, some starting with a dot, so
dot-stuffing is exercised) are written once into a template Maildir the way maillab's store writes
them (LF line endings, Dovecot's `,S=<file size>,W=<wire size>` in the name, which Dovecot reads
too); every run gets a fresh copy.

Servers, each on a free 127.0.0.1 port, started fresh per run and stopped in `finally`:

* maillab -- `maillab serve --profile rfc --data DIR --quiet`; the copy is DIR/mailboxes/bob@example.com.
* dovecot -- `dovecot -F -c CONFIG` with a minimal configuration this script writes (protocols =
  pop3, listen on 127.0.0.1 and the chosen port, ssl = no, plaintext auth allowed, passwd-file
  passdb, static userdb, mail_location = maildir:DIR/mailboxes/%u). Dovecot refuses to serve mail
  as root, so the copy is owned by `dovenull` (or `nobody`) and the userdb runs as that user;
  this needs root (the script skips Dovecot otherwise). Dovecot builds its index on the first
  login, so both servers get one warm-up login (STAT) before the timed retrieval.

Clients, timed from connect to QUIT:

* poplib -- Python's poplib in this process: USER/PASS, then RETR 1..N one at a time.
* mpop   -- `mpop --host ... --keep=on --only-new=off --delivery=maildir,DIR` with a fresh UIDL
            file (so it fetches everything); mpop pipelines when the server lists PIPELINING.

Rounds interleave the servers (the order alternates). Reported per size and client: messages/s
and MB/s (median of the rounds), the server's CPU time per message (user and system, from
/proc/PID/stat of the server and its children: Dovecot forks a pop3 process per login), and
maillab/dovecot; the target is maillab >= 1.0 x Dovecot. Every run checks that all N messages arrived, byte for byte the same
total size. Exit status 0 when every run succeeded, 1 otherwise, 2 on a setup problem.
"""

from __future__ import annotations

import argparse
import os
import poplib
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_throughput import (  # noqa: E402
    HOST, find_tool, fmt_cpu, free_port, load_average, maillab_command, stop_process, tree_cpu,
)  # fmt: skip

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from mockservers.store import to_stored, wire_size  # noqa: E402

USER = "bob@example.com"
PASSWORD = "bob-secret"
TARGET = 1.0
#: octets per message -> messages, when --messages is not given (each run a few seconds)
DEFAULT_COUNTS = {1024: 1000, 102400: 200}


def log(text: str) -> None:
    print(text, flush=True)


# --- content -----------------------------------------------------------------------------------------


def make_template(root: Path, count: int, size: int) -> int:
    """Write `count` messages of about `size` octets into root/{new,cur,tmp}; returns total octets."""
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    total = 0
    base = time.time_ns()
    for n in range(count):
        lines = [f"From: alice@example.com", f"To: {USER}", f"Subject: benchmark message {n}",
                 f"Message-ID: <{n}.{base}@bench.example>", ""]  # fmt: skip
        body_size = 0
        i = 0
        while body_size < size:
            line = (f".line {i} starts with a dot" if i % 17 == 0 else f"line {i} of message {n} " + "x" * 50)
            lines.append(line)
            body_size += len(line) + 2
            if body_size + 150 >= size:  # about `size` octets on the wire, headers included
                break
            i += 1
        content = to_stored(("\r\n".join(lines) + "\r\n").encode())
        name = f"{base + n:019d}.M{n % 1_000_000:06d}P1Q{n + 1}.bench,S={len(content)},W={wire_size(content)}"
        (root / "new" / name).write_bytes(content)
        total += wire_size(content)
    return total


# --- servers ----------------------------------------------------------------------------------------


class ServerError(RuntimeError):
    pass


class Maillab:
    name = "maillab"

    def __init__(self, workdir: Path, template: Path, tree: Path | None = None) -> None:
        self.tree = tree  # another source tree (--baseline), or None for this one
        self.workdir = workdir
        self.data = workdir / "data"
        shutil.copytree(template, self.data / "mailboxes" / USER)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        out = self.workdir / "server.out"
        with open(out, "wb") as handle:
            base = maillab_command() if self.tree is None else ["env", f"PYTHONPATH={self.tree}", sys.executable, "-m", "simulator.cli"]
            self.proc = subprocess.Popen(
                [*base, "serve", "--profile", "rfc", "--host", HOST, "--smtp-port", "0",
                 "--pop3-port", "0", "--data", str(self.data), "--quiet"],
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in out.read_text("utf-8", "replace").splitlines():
                if line.startswith("POP3 listening on"):
                    self.port = int(line.split(" (", 1)[0].rsplit(":", 1)[1])
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise ServerError(f"maillab did not start: {out.read_text('utf-8', 'replace')[-500:]}")

    def stop(self) -> None:
        stop_process(self.proc)


def dovecot_user() -> pwd.struct_passwd:
    for name in ("dovenull", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerError("no unprivileged user (dovenull, nobody) to run Dovecot's mail processes as")


class Dovecot:
    name = "dovecot"

    def __init__(self, workdir: Path, template: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.user = dovecot_user()
        mailboxes = workdir / "mailboxes"
        shutil.copytree(template, mailboxes / USER)
        os.chmod(workdir, 0o755)
        for path in [mailboxes, *mailboxes.rglob("*")]:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self.config = workdir / "dovecot.conf"
        (workdir / "run").mkdir()
        (workdir / "home").mkdir()
        os.chown(workdir / "home", self.user.pw_uid, self.user.pw_gid)
        (workdir / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        self.config.write_text(
            f"""# written by tests/benchmarks/pop3_throughput.py
protocols = pop3
listen = {HOST}
base_dir = {workdir / "run"}
log_path = {workdir / "dovecot.log"}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{mailboxes}/%u
first_valid_uid = 1
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {workdir / "passwd"}
}}
userdb {{
  driver = static
  args = uid={self.user.pw_uid} gid={self.user.pw_gid} home={workdir / "home"}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {self.port}
  }}
}}
service anvil {{
  chroot =
}}
"""
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = self.workdir / "server.out"
        with open(out, "wb") as handle:
            self.proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config)], stdout=handle, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    if sock.recv(256).startswith(b"+OK"):
                        return
            except OSError:
                time.sleep(0.05)
        log_text = (self.workdir / "dovecot.log").read_text("utf-8", "replace") if (self.workdir / "dovecot.log").exists() else ""
        raise ServerError(f"dovecot did not start: {out.read_text('utf-8', 'replace')[-500:]} {log_text[-800:]}")

    def stop(self) -> None:
        stop_process(self.proc)


# --- clients ----------------------------------------------------------------------------------------


def warm_up(port: int, count: int) -> None:
    client = poplib.POP3(HOST, port, timeout=120)
    client.user(USER)
    client.pass_(PASSWORD)
    messages, _ = client.stat()
    client.quit()
    if messages != count:
        raise ServerError(f"STAT says {messages} messages, expected {count}")


def run_poplib(port: int, count: int, workdir: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    client = poplib.POP3(HOST, port, timeout=120)
    client.user(USER)
    client.pass_(PASSWORD)
    retrieved = octets = 0
    for number in range(1, count + 1):
        _, lines, _ = client.retr(number)
        retrieved += 1
        octets += sum(len(line) + 2 for line in lines)
    client.quit()
    return time.perf_counter() - start, retrieved, octets


def run_mpop(port: int, count: int, workdir: Path, binary: str) -> tuple[float, int, int]:
    target = workdir / "mpop-maildir"
    for sub in ("new", "cur", "tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    uidls = workdir / "mpop-uidls"
    command = [binary, f"--host={HOST}", f"--port={port}", "--auth=user", f"--user={USER}",
               f"--passwordeval=echo {PASSWORD}", "--tls=off", "--keep=on", "--only-new=off",
               f"--uidls-file={uidls}", f"--delivery=maildir,{target}", "--received-header=off", "-q"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise ServerError(f"mpop exit {result.returncode}: {result.stderr.strip()[-400:]}")
    files = list((target / "new").iterdir()) + list((target / "cur").iterdir())
    return elapsed, len(files), sum(f.stat().st_size for f in files)


# --- driver -----------------------------------------------------------------------------------------


def run_one(name: str, client: str, workdir: Path, template: Path, count: int, tools: dict) -> tuple[float, int, int, tuple[float, float] | None]:
    """One timed retrieval: (seconds, messages, octets, server CPU (user, system) seconds)."""
    if name == "dovecot":
        server: Maillab | Dovecot = Dovecot(workdir, template, tools["dovecot"])
    else:
        server = Maillab(workdir, template, tools["baseline"] if name == "baseline" else None)
    try:
        server.start()
        warm_up(server.port, count)
        assert server.proc is not None
        before = tree_cpu(server.proc.pid)
        if client == "poplib":
            elapsed, got, octets = run_poplib(server.port, count, workdir)
        else:
            elapsed, got, octets = run_mpop(server.port, count, workdir, tools["mpop"])
        after = tree_cpu(server.proc.pid)
        cpu = None if before is None or after is None else (after[0] - before[0], after[1] - before[1])
        return elapsed, got, octets, cpu
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,102400", help="approximate octets per message, comma-separated")
    parser.add_argument("--messages", type=int, default=None, help="messages per size (default: 1000 of 1 KB, 200 of 100 KB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="maillab,dovecot")
    parser.add_argument("--clients", default="poplib,mpop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--baseline", type=Path, help="another source tree: its maillab runs too, as 'baseline'")
    args = parser.parse_args(argv)
    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--sizes takes octet counts, got {args.sizes!r}")
    servers = [s for s in args.only.split(",") if s]
    clients = [c for c in args.clients.split(",") if c]
    tools = {"dovecot": find_tool("dovecot"), "mpop": find_tool("mpop"), "baseline": args.baseline}
    if args.baseline is not None:
        if not (args.baseline / "simulator" / "cli").is_dir():
            parser.error("--baseline DIR must be a maillab source tree")
        servers.append("baseline")
    if "dovecot" in servers and (tools["dovecot"] is None or os.geteuid() != 0):
        log("dovecot: skipped (needs the dovecot-pop3d package and root)")
        servers.remove("dovecot")
    if "mpop" in clients and tools["mpop"] is None:
        log("mpop: skipped (apt-get install mpop)")
        clients.remove("mpop")
    if not servers or not clients or not sizes:
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-pop3-"))
    os.chmod(root, 0o755)
    counts = {size: args.messages or DEFAULT_COUNTS.get(size, 500) for size in sizes}
    templates = {}
    for size in sizes:
        templates[size] = root / f"template-{size}"
        total = make_template(templates[size], counts[size], size)
        log(f"POP3 retrieval: {counts[size]} messages, {total / 1e6:.1f} MB ({total // counts[size]} octets each on "
            f"average on the wire)")  # fmt: skip
    log(f"{args.rounds} round(s); {os.cpu_count()} CPUs; load average {load_average()}")
    results: dict[tuple[int, str, str], list[tuple[float, float, tuple[float, float] | None]]] = {}
    failures = 0
    try:
        for round_number in range(1, args.rounds + 1):
            order = servers if round_number % 2 else servers[::-1]
            for size in sizes:
                count = counts[size]
                for client in clients:
                    for name in order:
                        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
                        try:
                            elapsed, got, octets, cpu = run_one(name, client, workdir, templates[size], count, tools)
                            problem = "" if got == count else f"  RETRIEVED {got}/{count}"
                            if problem:
                                failures += 1
                            rate, mbps = got / elapsed, octets / elapsed / 1e6
                            per = None if cpu is None else (cpu[0] * 1000 / count, cpu[1] * 1000 / count)
                            results.setdefault((size, client, name), []).append((rate, mbps, per))
                            log(f"  round {round_number}  {size:>6} B  {client:<6} {name:<8} {rate:8.0f} msgs/s  {mbps:6.1f} MB/s  "
                                f"CPU/msg {fmt_cpu(per)}  ({elapsed:.2f} s){problem}")  # fmt: skip
                        except (ServerError, OSError, poplib.error_proto, subprocess.SubprocessError) as error:
                            failures += 1
                            log(f"  round {round_number}  {size:>6} B  {client:<6} {name:<8} FAILED: {error}")
                        finally:
                            if not args.keep:
                                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    log("")
    log(f"Median over {args.rounds} round(s); CPU/msg: median server CPU time per message (u = user, s = system):")
    header = f"{'size':>8} {'client':<7} {'maillab msgs/s':>15} {'CPU/msg':>17} {'dovecot msgs/s':>15} {'CPU/msg':>17} {'ml MB/s':>8} {'dc MB/s':>8} {'ml/dovecot (>=1.0)':>19}"
    if args.baseline is not None:
        header += f" {'baseline msgs/s':>16} {'CPU/msg':>17} {'ml/baseline':>12}"
    log(header)
    for size in sizes:
        for client in clients:
            row = {}
            for name in ("maillab", "dovecot", "baseline"):
                runs = results.get((size, client, name))
                if not runs:
                    row[name] = None
                    continue
                costs = [c for _, _, c in runs if c is not None]
                cost = (statistics.median(c[0] for c in costs), statistics.median(c[1] for c in costs)) if costs else None
                row[name] = (statistics.median(r for r, _, _ in runs), statistics.median(m for _, m, _ in runs), cost)
            ml, dv = row["maillab"], row["dovecot"]
            ratio = f"{ml[0] / dv[0]:.2f}{'' if ml[0] / dv[0] >= TARGET else ' LOW'}" if ml and dv else "-"
            rate = lambda v: f"{v[0]:.0f}" if v else "-"  # noqa: E731
            mbs = lambda v: f"{v[1]:.1f}" if v else "-"  # noqa: E731
            cpu = lambda v: fmt_cpu(v[2]) if v else "-"  # noqa: E731
            line = f"{size:>8} {client:<7} {rate(ml):>15} {cpu(ml):>17} {rate(dv):>15} {cpu(dv):>17} {mbs(ml):>8} {mbs(dv):>8} {ratio:>19}"
            if args.baseline is not None:
                bl = row["baseline"]
                line += f" {rate(bl):>16} {cpu(bl):>17} {(f'{ml[0] / bl[0]:.2f}' if ml and bl else '-'):>12}"
            log(line)
    log(f"load average now {load_average()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
