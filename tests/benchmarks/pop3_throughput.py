#!/usr/bin/env python3
"""POP3 retrieval throughput: maillab against Dovecot's POP3 server on the same Maildir content.

A script, not a pytest test (it measures a machine, not a behaviour)::

    .venv/bin/python tests/benchmarks/pop3_throughput.py                  # 1000 x 4 KB, 3 rounds
    .venv/bin/python tests/benchmarks/pop3_throughput.py --messages 1000 --size 65536 --rounds 5
    .venv/bin/python tests/benchmarks/pop3_throughput.py --only maillab --clients poplib

Content: `--messages` messages of about `--size` octets (CRLF lines, some starting with a dot, so
dot-stuffing is exercised) are written once into a template Maildir; every run gets a fresh copy.

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

Reported: messages/s and MB/s (median of the rounds) and maillab/dovecot per client; the target is
maillab >= 0.5 x Dovecot. Every run checks that all N messages arrived, byte for byte the same
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
from smtp_throughput import HOST, find_tool, free_port, load_average, maillab_command, stop_process  # noqa: E402

USER = "bob@example.com"
PASSWORD = "bob-secret"
TARGET = 0.5


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
            i += 1
        content = ("\r\n".join(lines) + "\r\n").encode()
        name = f"{base + n:019d}.M{n % 1_000_000:06d}P1Q{n + 1}.bench"
        (root / "new" / name).write_bytes(content)
        total += len(content)
    return total


# --- servers ----------------------------------------------------------------------------------------


class ServerError(RuntimeError):
    pass


class Maillab:
    name = "maillab"

    def __init__(self, workdir: Path, template: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        shutil.copytree(template, self.data / "mailboxes" / USER)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        out = self.workdir / "server.out"
        with open(out, "wb") as handle:
            self.proc = subprocess.Popen(
                [*maillab_command(), "serve", "--profile", "rfc", "--host", HOST, "--smtp-port", "0",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=4096, help="approximate octets per message")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="maillab,dovecot")
    parser.add_argument("--clients", default="poplib,mpop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    servers = [s for s in args.only.split(",") if s]
    clients = [c for c in args.clients.split(",") if c]
    tools = {"dovecot": find_tool("dovecot"), "mpop": find_tool("mpop")}
    if "dovecot" in servers and (tools["dovecot"] is None or os.geteuid() != 0):
        log("dovecot: skipped (needs the dovecot-pop3d package and root)")
        servers.remove("dovecot")
    if "mpop" in clients and tools["mpop"] is None:
        log("mpop: skipped (apt-get install mpop)")
        clients.remove("mpop")
    if not servers or not clients:
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-pop3-"))
    os.chmod(root, 0o755)
    template = root / "template"
    total = make_template(template, args.messages, args.size)
    log(f"POP3 retrieval: {args.messages} messages, {total / 1e6:.1f} MB ({total // args.messages} octets each on average); "
        f"{args.rounds} round(s); {os.cpu_count()} CPUs; load average {load_average()}")  # fmt: skip
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    failures = 0
    try:
        for round_number in range(1, args.rounds + 1):
            order = servers if round_number % 2 else servers[::-1]
            for client in clients:
                for name in order:
                    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
                    server = Maillab(workdir, template) if name == "maillab" else Dovecot(workdir, template, tools["dovecot"])
                    try:
                        server.start()
                        warm_up(server.port, args.messages)
                        if client == "poplib":
                            elapsed, got, octets = run_poplib(server.port, args.messages, workdir)
                        else:
                            elapsed, got, octets = run_mpop(server.port, args.messages, workdir, tools["mpop"])
                        problem = "" if got == args.messages else f"  RETRIEVED {got}/{args.messages}"
                        if problem:
                            failures += 1
                        rate, mbps = got / elapsed, octets / elapsed / 1e6
                        results.setdefault((client, name), []).append((rate, mbps))
                        log(f"  round {round_number}  {client:<6} {name:<8} {rate:8.0f} msgs/s  {mbps:6.1f} MB/s  ({elapsed:.2f} s){problem}")
                    except (ServerError, OSError, poplib.error_proto, subprocess.SubprocessError) as error:
                        failures += 1
                        log(f"  round {round_number}  {client:<6} {name:<8} FAILED: {error}")
                    finally:
                        server.stop()
                        if not args.keep:
                            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    log("")
    log(f"Median over {args.rounds} round(s), {args.messages} x ~{args.size} octets:")
    log(f"{'client':<8} {'maillab msgs/s':>15} {'dovecot msgs/s':>15} {'maillab MB/s':>13} {'dovecot MB/s':>13} {'ml/dovecot (>=0.5)':>20}")
    for client in clients:
        row = {}
        for name in ("maillab", "dovecot"):
            runs = results.get((client, name))
            row[name] = (statistics.median(r for r, _ in runs), statistics.median(m for _, m in runs)) if runs else None
        ml, dv = row["maillab"], row["dovecot"]
        ratio = f"{ml[0] / dv[0]:.2f}{'' if ml[0] / dv[0] >= TARGET else ' LOW'}" if ml and dv else "-"
        fmt = lambda v, i: f"{v[i]:.0f}" if v and i == 0 else (f"{v[i]:.1f}" if v else "-")  # noqa: E731
        log(f"{client:<8} {fmt(ml, 0):>15} {fmt(dv, 0):>15} {fmt(ml, 1):>13} {fmt(dv, 1):>13} {ratio:>20}")
    log(f"load average now {load_average()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
