"""`maillab lint`: every problem as `file:line: message`, a summary line, exit 1 on any error."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulator.defaults import DEFAULT_REPLAY_JOBS, EXIT_FAILED, EXIT_OK

HELP = "check lessons and profiles, replay each lesson's solution; file:line problems"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", help="lesson .md, profile .toml or folders (default: everything bundled)")
    parser.add_argument("--no-replay", action="store_true", help="skip replaying solutions against servers")
    parser.add_argument(
        "--jobs", type=_positive, default=None, metavar="N",
        help=f"lessons replayed at once, each against its own servers (default {DEFAULT_REPLAY_JOBS})",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def run(args: argparse.Namespace) -> int:
    from mockservers.lint import lint_profile
    from mockservers.profile_files import bundled_personas
    from simulator.course.lint import lint_lessons

    paths = [Path(p) for p in args.paths]
    profiles: list[str | Path] = []
    lessons: list[Path] = []
    for path in paths:
        if path.suffix == ".toml" and path.name != "course.toml":
            profiles.append(path)
        elif path.is_dir():
            lessons.append(path)
            profiles += sorted(p for p in path.rglob("*.toml") if p.name != "course.toml")
        else:
            lessons.append(path)
    if not paths:
        profiles = list(bundled_personas())
    problems = []
    from mockservers.world.worldfile import DEFAULT_WORLD, is_world_file, lint_world

    worlds = [p for p in profiles if isinstance(p, Path) and is_world_file(p)]
    profiles = [p for p in profiles if p not in worlds]
    if not paths:
        worlds.append(DEFAULT_WORLD)
    for profile in profiles:
        problems += lint_profile(profile)
    for world in worlds:
        problems += lint_world(world)
    report = None
    if lessons or not paths:
        report = lint_lessons(lessons, args.lessons, replay=not args.no_replay, jobs=args.jobs or DEFAULT_REPLAY_JOBS)
        problems += report.problems
    for problem in problems:
        print(problem)
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = len(problems) - errors
    lesson_count = report.lessons_checked if report else 0
    print(
        f"{lesson_count} lesson file{'s' if lesson_count != 1 else ''}, {len(profiles)} profile"
        f"{'s' if len(profiles) != 1 else ''} and {len(worlds)} world{'s' if len(worlds) != 1 else ''} checked: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}"
    )
    return EXIT_FAILED if errors else EXIT_OK
