"""`maillab classroom init | watch | grade` (the argparse definitions are in simulator/cli.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_USAGE

from simulator.classroom.config import ClassConfig, ClassroomError, init_class, load_class


def _fail(message: str) -> int:
    print(f"maillab classroom: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run_classroom(args: argparse.Namespace) -> int:
    command = args.classroom_command
    try:
        if command == "init":
            return _init(args)
        if command == "watch":
            return _watch(args)
        if command == "grade":
            return _grade(args)
    except ClassroomError as error:
        return _fail(str(error))
    return _fail(f"unknown subcommand {command!r}")


def _init(args: argparse.Namespace) -> int:
    config = init_class(
        args.dir,
        students=args.students,
        prefix=args.prefix,
        profile=args.profile,
        lessons=args.lessons,
        domain=args.domain,
        server_host=args.server_host,
    )
    first, last = config.students[0], config.students[-1]
    print(f"class folder {config.dir}: {len(config.students)} students, {first.address} .. {last.address}")
    print(f"  profile {config.profile}, handouts in {config.dir / 'handouts'}, secrets in {config.dir / 'students.csv'}")
    print(f"  handouts say: server {config.server_host}, SMTP {config.smtp_port}, POP3 {config.pop3_port}")
    print(f"start the server:  maillab serve --classroom {config.dir} --host 0.0.0.0")
    return EXIT_OK


def load_lesson(config: ClassConfig, lesson_id: str | None):  # -> Lesson | None
    """The lesson by id from the bundled curriculum and the class's lesson pack."""
    if not lesson_id:
        return None
    from simulator.course.catalog import load_index

    dirs: list[Path] = [config.lessons] if config.lessons else []
    index = load_index(dirs)
    lesson = index.load(lesson_id, "en")
    if lesson is None:
        where = "the bundled lessons" + (f" and {config.lessons}" if config.lessons else "")
        problems = [str(e) for e in index.errors if lesson_id in str(e)]
        detail = f" ({problems[0]})" if problems else ""
        raise ClassroomError(f"no lesson {lesson_id!r} in {where}{detail}")
    return lesson


def _watch(args: argparse.Namespace) -> int:
    config = load_class(args.dir)
    lesson = load_lesson(config, args.lesson or config.lesson)
    from simulator.classroom.dashboard import ClassroomApp

    ClassroomApp(config, lesson).run()
    return EXIT_OK


def _grade(args: argparse.Namespace) -> int:
    config = load_class(args.dir)
    lesson = load_lesson(config, args.lesson)
    from simulator.classroom.grading import format_csv, format_md, grade_class

    report = grade_class(config, lesson)
    if args.format == "csv":
        sys.stdout.write(format_csv(report))
        print(report.summary(), file=sys.stderr)
    else:
        sys.stdout.write(format_md(report))
    return EXIT_OK
