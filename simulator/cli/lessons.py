"""`maillab lessons`: what there is to learn, track by track, as the app lists it."""

from __future__ import annotations

import argparse

from simulator.defaults import EXIT_OK

HELP = "list lessons: id, title, protocol, minutes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Only the global options (--lessons, --lang)."""


def run(args: argparse.Namespace) -> int:
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
