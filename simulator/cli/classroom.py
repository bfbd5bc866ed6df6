"""`maillab classroom init | watch | grade`: set up a class, watch it, grade it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulator.defaults import EXIT_OK, EXIT_USAGE

HELP = "classroom labs: set up a class, watch it, grade it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import subcommands

    slot = subcommands(parser, "classroom_command", required=True)
    init = slot.add("init", "write a class folder: config, students, handouts (--lessons PACK: the class's lesson folder)")
    init.add_argument("dir", type=Path)
    init.add_argument("--students", type=int, required=True, help="number of students")
    init.add_argument("--prefix", default="s", help="student id prefix (default s: s01, s02 ...)")
    init.add_argument("--profile", default="rfc", help="persona or profile file for the class (default rfc)")
    init.add_argument(
        "--domain", default=None,
        help="mail domain of the students (default: the profile's first local domain); with --world two, A,B (default: the world's first two)",
    )
    init.add_argument("--server-host", default=None, help="address students connect to (printed on handouts)")
    init.add_argument(
        "--world", nargs="?", const="", default=None, metavar="FILE",
        help="the class runs a lab internet (the bundled world without FILE): each student gets an address on two of its domains",
    )
    watch = slot.add("watch", "live dashboard of the class")
    watch.add_argument("dir", type=Path)
    watch.add_argument("--lesson", default=None, help="lesson id whose steps the dashboard follows")
    grade = slot.add("grade", "grade a lesson from the server's side")
    grade.add_argument("dir", type=Path)
    grade.add_argument("--lesson", required=True, help="lesson id")
    grade.add_argument("--format", choices=("csv", "md"), default="md")


def _fail(message: str) -> int:
    print(f"maillab classroom: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from simulator.classroom.config import ClassroomError

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
    from simulator.classroom.config import ClassroomError, init_class

    if len(args.lessons) > 1:
        raise ClassroomError("a class has one lesson pack: give --lessons once")
    config = init_class(
        args.dir,
        students=args.students,
        prefix=args.prefix,
        profile=args.profile,
        lessons=args.lessons[0] if args.lessons else None,
        domain=args.domain,
        server_host=args.server_host,
        world=args.world,
    )
    first, last = config.students[0], config.students[-1]
    if config.is_world:
        from simulator.classroom.config import student_mailboxes

        print(
            f"class folder {config.dir}: {len(config.students)} students, {first.address} .. {last.address}"
            f" and {first.other_address} .. {last.other_address}"
        )
        print(f"  world {config.world}, handouts in {config.dir / 'handouts'}, secrets in {config.dir / 'students.csv'}")
        ports = ", ".join(
            f"{box.domain} SMTP {box.smtp_port} POP3 {box.pop3_port}" for box in student_mailboxes(config, first)
        )
        print(f"  handouts say: server {config.server_host}, {ports}")
    else:
        print(f"class folder {config.dir}: {len(config.students)} students, {first.address} .. {last.address}")
        print(f"  profile {config.profile}, handouts in {config.dir / 'handouts'}, secrets in {config.dir / 'students.csv'}")
        print(f"  handouts say: server {config.server_host}, SMTP {config.smtp_port}, POP3 {config.pop3_port}")
    print(f"start the server:  maillab serve --classroom {config.dir} --host 0.0.0.0")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    from simulator.classroom.config import load_class, load_lesson

    config = load_class(args.dir)
    lesson = load_lesson(config, args.lesson or config.lesson)
    from simulator.classroom.dashboard import ClassroomApp

    ClassroomApp(config, lesson).run()
    return EXIT_OK


def _grade(args: argparse.Namespace) -> int:
    from simulator.classroom.config import load_class, load_lesson

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
