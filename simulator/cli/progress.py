"""`maillab progress`: what was learnt, and `--reset` to forget it."""

from __future__ import annotations

import argparse

from simulator.defaults import EXIT_FAILED, EXIT_OK

HELP = "show saved progress, or reset it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", nargs="?", const="*", default=None, metavar="LESSON", help="forget one lesson, or all")


def run(args: argparse.Namespace) -> int:
    from simulator.course.progress import Progress, progress_path
    from simulator.defaults import data_dir

    path = progress_path(data_dir(args.data))
    progress = Progress.load(path)
    if args.reset is not None:
        lesson = None if args.reset == "*" else args.reset
        known = progress.reset(lesson)
        progress.save()
        if lesson and not known:
            print(f"no progress saved for {lesson!r}")
            return EXIT_FAILED
        print("progress cleared" if lesson is None else f"progress for {lesson} cleared")
        return EXIT_OK
    entries = progress.entries()
    if not entries:
        print(f"no progress yet ({path})")
        return EXIT_OK
    for lesson_id, entry in sorted(entries.items()):
        done, total = len(entry.get("completed", [])), entry.get("total", 0)
        mark = "done" if total and done >= total else f"{done}/{total} steps"
        print(f"{lesson_id:<28} {mark:<12} {entry.get('updated', '')}  {entry.get('title', '')}")
    last = progress.last()
    if last:
        print(f"continue: {last[0]}" + (f" at step {last[1]}" if last[1] else ""))
    return EXIT_OK
