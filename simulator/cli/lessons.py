"""`maillab lessons` (what there is to learn) and `maillab progress` (what was learnt)."""

from __future__ import annotations

import argparse

from . import EXIT_FAILED, EXIT_OK


def run_lessons(args: argparse.Namespace) -> int:
    from simulator.course.catalog import load_catalog
    from simulator.engine.knowledge import resolve_language

    lang = resolve_language(args.lang)
    catalog = load_catalog(args.lessons)
    for error in catalog.errors:
        print(f"warning: {error}")
    for track, ids in catalog.ordered():
        print(f"# {track.title.get(lang) or track.title.get('en') or track.id}")
        for lesson_id in ids:
            lesson = catalog.get(lesson_id, lang)
            if lesson is None:
                continue
            languages = ",".join(sorted(catalog.lessons[lesson_id]))
            print(f"  {lesson.id:<28} {lesson.protocol:<5} {lesson.minutes:>3} min  [{languages}]  {lesson.title}")
    return EXIT_OK


def run_progress(args: argparse.Namespace) -> int:
    from simulator.course.progress import Progress, default_progress_path

    path = (args.data / "progress.json") if args.data else default_progress_path()
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
