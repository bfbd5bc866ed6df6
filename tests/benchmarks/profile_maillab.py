#!/usr/bin/env python3
"""Where does `maillab serve` spend its time under smtp-source load? py-spy or pyinstrument.

    .venv/bin/pip install py-spy pyinstrument       # profilers, not project dependencies
    .venv/bin/python tests/benchmarks/profile_maillab.py                      # py-spy, -s 20 x 1 KB
    .venv/bin/python tests/benchmarks/profile_maillab.py --profiler pyinstrument
    .venv/bin/python tests/benchmarks/profile_maillab.py --sessions 200 --count 1500 --out /tmp/prof

py-spy samples every thread of the running server (`--nonblocking`, so the server is not paused)
and only records threads that are on CPU (not idle in epoll or fsync); the report splits samples by
thread and lists the top functions by own time and by inclusive time. `--gil` records only the
thread holding the GIL: with one reactor thread, that is Python's real CPU budget.
pyinstrument runs the server under its (wall-clock, main thread only) profiler; when the server
stops on SIGTERM the session is rendered as a compact tree (percent of wall time, idle epoll.poll
included, so what is not under a handler is the reactor waiting).

Output files (raw py-spy stacks, speedscope JSON, pyinstrument text) go to --out (kept).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smtp_throughput import (  # noqa: E402
    HOST, RECIPIENT, SENDER, START_TIMEOUT, STOP_TIMEOUT, count_files, find_tool, maillab_command, stop_process,
)  # fmt: skip

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def start_maillab(workdir: Path, base: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    out_path = workdir / "server.out"
    cmd = [*(base or maillab_command()), "serve", "--profile", "rfc", "--host", HOST,
           "--smtp-port", "0", "--pop3-port", "0", "--data", str(workdir / "data"), "--quiet"]  # fmt: skip
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT * 2
    while time.monotonic() < deadline:
        for line in out_path.read_text("utf-8", "replace").splitlines():
            if "SMTP listening on" in line:
                return proc, int(line.split(" (", 1)[0].rsplit(":", 1)[1])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop_process(proc)
    raise SystemExit(f"maillab did not start:\n{out_path.read_text('utf-8', 'replace')}")


def run_load(args: argparse.Namespace, port: int) -> tuple[float, int]:
    cmd = [args.smtp_source, "-s", str(args.sessions), "-l", str(args.size), "-m", str(args.count),
           "-f", SENDER, "-t", RECIPIENT, f"{HOST}:{port}"]  # fmt: skip
    start = time.perf_counter()
    completed = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        print(f"smtp-source exit {completed.returncode}: {completed.stderr.decode()[-500:]}")
    return elapsed, completed.returncode


def parse_frame(text: str) -> tuple[str, str]:
    """('func (file)', 'func (file:line)') of one py-spy frame."""
    match = _FRAME.match(text)
    if not match:
        return text, text
    return f"{match['func']} ({match['file']})", text


def summarize_raw(raw: Path, top: int) -> str:
    per_thread: collections.Counter[str] = collections.Counter()
    self_fn: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    self_line: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    incl_fn: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    total = 0
    for row in raw.read_text("utf-8", "replace").splitlines():
        stack, _, count_text = row.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        group = "reactor (MainThread)" if "MainThread" in thread else (
            "worker threads (fsync pool)" if "PoolThread" in thread else "other threads")
        frames = frames[1:]
        if not frames:
            continue
        total += count
        per_thread[group] += count
        func, line = parse_frame(frames[-1])
        for key in (group, "ALL"):
            self_fn[key][func] += count
            self_line[key][line] += count
            for name in {parse_frame(f)[0] for f in frames}:
                incl_fn[key][name] += count
    lines = [f"{total} on-CPU samples"]
    for group, count in per_thread.most_common():
        lines.append(f"  {group:<28} {count:7d}  {100 * count / total:5.1f}%")
    for group in ["reactor (MainThread)", "worker threads (fsync pool)"]:
        if group not in self_fn:
            continue
        group_total = per_thread[group]
        lines.append("")
        lines.append(f"== {group}: top {top} by own time (% of this thread group's samples)")
        for name, count in self_fn[group].most_common(top):
            lines.append(f"  {100 * count / group_total:5.1f}%  {name}")
        lines.append(f"== {group}: top {top} lines by own time")
        for name, count in self_line[group].most_common(top):
            lines.append(f"  {100 * count / group_total:5.1f}%  {name}")
        lines.append(f"== {group}: top {top * 2} by inclusive time")
        for name, count in incl_fn[group].most_common(top * 2):
            lines.append(f"  {100 * count / group_total:5.1f}%  {name}")
    return "\n".join(lines)


def profile_pyspy(args: argparse.Namespace, workdir: Path, out: Path) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    proc, port = start_maillab(workdir)
    spies: list[subprocess.Popen] = []
    try:
        mode = ["--gil"] if args.gil else []
        raw = out / "pyspy.raw"
        speedscope = out / "pyspy.speedscope.json"
        # Two recorders over one run: collapsed stacks to summarise here, speedscope to browse.
        for fmt, path in (("raw", raw), ("speedscope", speedscope)):
            spies.append(subprocess.Popen(
                [py_spy, "record", "--pid", str(proc.pid), "--rate", str(args.rate), "--threads", "--nonblocking",
                 *mode, "--format", fmt, "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        time.sleep(1.0)
        elapsed, rc = run_load(args, port)
        print(f"load: smtp-source -s {args.sessions} -l {args.size} -m {args.count}: {elapsed:.2f} s, "
              f"{args.count / elapsed:.0f} msgs/s under py-spy, exit {rc}, "
              f"stored {count_files(workdir / 'data' / 'mailboxes' / RECIPIENT / 'new')}")  # fmt: skip
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=STOP_TIMEOUT)
        stop_process(proc)
    print(summarize_raw(raw, args.top))
    print(f"\nfiles: {raw}  {speedscope} (open in https://www.speedscope.app)")


def profile_pyinstrument(args: argparse.Namespace, workdir: Path, out: Path) -> None:
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        raise SystemExit("pyinstrument not found: .venv/bin/pip install pyinstrument") from None
    session = out / "maillab.pyisession"
    wrapper = [sys.executable, "-m", "pyinstrument", "--interval", "0.001", "--renderer", "pyisession",
               "--outfile", str(session), "-m", "simulator.cli"]  # fmt: skip
    proc, port = start_maillab(workdir, wrapper)
    try:
        time.sleep(0.5)
        elapsed, rc = run_load(args, port)
        print(f"load: smtp-source -s {args.sessions} -l {args.size} -m {args.count}: {elapsed:.2f} s, "
              f"{args.count / elapsed:.0f} msgs/s under pyinstrument, exit {rc}")  # fmt: skip
    finally:
        stop_process(proc, timeout=60)  # the server stops on SIGTERM; pyinstrument then saves
    if not session.exists():
        print("pyinstrument wrote no session")
        return
    render = [sys.executable, "-m", "pyinstrument", "--load", str(session), "--renderer", "text",
              "-p", "time=percent_of_total"]  # fmt: skip
    compact, full = out / "pyinstrument-compact.txt", out / "pyinstrument-full.txt"
    # Compact: nodes >= 1.5% of wall time, library frames folded; full: everything.
    subprocess.run([*render, "-p", "processor_options.filter_threshold=0.015", "-p", "short_mode",
                    "--outfile", str(compact)], check=True, timeout=120)  # fmt: skip
    subprocess.run([*render, "--show-all", "--outfile", str(full)], check=True, timeout=120)
    print(compact.read_text("utf-8", "replace"))
    print(f"full reports: {compact}  {full}  (session: {session})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiler", choices=["py-spy", "pyinstrument"], default="py-spy")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="py-spy: only the thread holding the GIL")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="directory for the profiles (default: a new tmp dir)")
    args = parser.parse_args()
    args.smtp_source = find_tool("smtp-source")
    if args.smtp_source is None:
        raise SystemExit("smtp-source not found (apt-get install postfix)")
    out = args.out or Path(tempfile.mkdtemp(prefix="maillab-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="maillab-profile-data-"))
    try:
        (profile_pyspy if args.profiler == "py-spy" else profile_pyinstrument)(args, workdir, out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
