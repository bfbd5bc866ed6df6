"""`maillab queue`: the mail a world's servers still have to deliver, with its next attempt and last error."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from simulator.defaults import EXIT_OK

HELP = "show the queues of a world's servers (message, attempts, next attempt, last error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("world", nargs="?", default=None, help="world name (default: every world under the data directory)")
    parser.add_argument("--classroom", type=Path, default=None, metavar="DIR", help="the queues of a world class (DIR/data)")


def run(args: argparse.Namespace) -> int:
    from mockservers.store import MailStore
    from simulator.defaults import data_dir

    if args.classroom is not None:  # a world class keeps its world in DIR/data
        root = args.classroom / "data"
        worlds = [(args.classroom.name, root)] if root.is_dir() else []
    else:
        root = data_dir(args.data) / "world"
        worlds = [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
        if args.world is not None:
            worlds = [(name, w) for name, w in worlds if name == args.world]
    shown = 0
    for name, world in worlds:
        for domain in sorted(p for p in world.iterdir() if (p / "queue").is_dir()):
            for record in MailStore(domain).queued():
                shown += 1
                print(describe(name, domain.name, record))
    if not shown:
        print(f"no queued mail under {root}")
    return EXIT_OK


def describe(world: str, domain: str, record: dict) -> str:
    """One queue entry in one paragraph; times are the world's lab time."""
    pending = [r for r in record.get("recipients", []) if r not in record.get("done", {})]
    lines = [
        f"{world}/{domain} {record['id']}: {record.get('sender') or '<>'} -> {', '.join(pending) or '(done)'}, {record.get('size', 0)} octets",
        f"  queued {record.get('received', '?')}, {record.get('attempts', 0)} attempt(s)",
    ]
    if "next_attempt" in record:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["next_attempt"])))
        lines.append(f"  next attempt {when} (lab time)")
    if record.get("last_error"):
        lines.append(f"  last error: {record['last_error']}")
    return "\n".join(lines)
