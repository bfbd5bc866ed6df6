"""The `maillab` command: one entry point, one small module per subcommand's job.

Subcommands import their heavy dependencies lazily, so `maillab --help` and the TUI start fast
and Twisted is only imported by what runs servers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def default_data_dir() -> Path:
    """Where mailboxes, transcripts and certificates live unless --data says otherwise."""
    override = os.environ.get("MAILLAB_DATA")
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("maillab", appauthor=False))


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one clear line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"maillab: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="maillab", description="Learn SMTP and POP3 on mock mail servers that explain every reply.")
    parser.add_argument("--lessons", type=Path, action="append", default=[], metavar="DIR", help="add an instructor's lesson folder")
    parser.add_argument("--lang", choices=("en", "zh"), default=None, help="interface language (default: MAILLAB_LANG or the locale)")
    parser.add_argument("--server", default=None, metavar="HOST", help="use a classroom server instead of the embedded ones")
    parser.add_argument("--smtp-port", type=_port, default=2525, help="SMTP port of --server (default 2525)")
    parser.add_argument("--pop3-port", type=_port, default=2110, help="POP3 port of --server (default 2110)")
    parser.add_argument("--login", default=None, metavar="ADDRESS", help="your address on a classroom server")
    parser.add_argument("--data", type=Path, default=None, help="data directory (default: the user data directory)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the mock SMTP and POP3 servers")
    serve.add_argument("--profile", default="rfc", help="persona name (rfc, qq, sina, ...) or a profile .toml path")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--smtp-port", type=_port, default=2525, help="SMTP port (0 picks a free one; default 2525)")
    serve.add_argument("--pop3-port", type=_port, default=2110, help="POP3 port (0 picks a free one; default 2110)")
    serve.add_argument("--smtps-port", type=_port, default=None, help="SMTP over implicit TLS (off unless given)")
    serve.add_argument("--pop3s-port", type=_port, default=None, help="POP3 over implicit TLS (off unless given)")
    serve.add_argument("--data", type=Path, default=None, help="data directory (default: the user data directory)")
    serve.add_argument(
        "--account", action="append", default=[], metavar="ADDRESS:SECRET",
        help="add a mailbox and its login secret (repeatable); its domain becomes local",
    )
    serve.add_argument(
        "--fault", action="append", default=[], metavar="RULE",
        help="add a fault rule, e.g. 'RCPT#2 452 4.5.3 Too many recipients' (repeatable; see docs/profiles.md)",
    )
    serve.add_argument("--seed", type=int, default=None, help="seed for probability faults (same seed, same failures)")
    serve.add_argument("--quiet", action="store_true", help="print only the listening lines")
    serve.add_argument(
        "--classroom", type=Path, default=None, metavar="DIR",
        help="serve a class folder made by `maillab classroom init` (its profile, students and data)",
    )

    profiles = sub.add_parser("profiles", help="list personas, or show one resolved")
    profiles_sub = profiles.add_subparsers(dest="profiles_command", parser_class=_Parser)
    show = profiles_sub.add_parser("show", help="print a persona or profile file, fully resolved")
    show.add_argument("profile", help="persona name or profile .toml path")

    lint = sub.add_parser("lint", help="check lessons and profiles, replay each lesson's solution; file:line problems")
    lint.add_argument("paths", nargs="*", help="lesson .md, profile .toml or folders (default: everything bundled)")
    lint.add_argument("--lessons", type=Path, action="append", default=[], metavar="DIR", help="an instructor's lesson folder")
    lint.add_argument("--no-replay", action="store_true", help="skip replaying solutions against servers")

    lessons = sub.add_parser("lessons", help="list lessons: id, title, protocol, minutes")
    lessons.add_argument("--lessons", type=Path, action="append", default=[], metavar="DIR", help="an instructor's lesson folder")
    lessons.add_argument("--lang", choices=("en", "zh"), default=None)

    progress = sub.add_parser("progress", help="show saved progress, or reset it")
    progress.add_argument("--reset", nargs="?", const="*", default=None, metavar="LESSON", help="forget one lesson, or all")
    progress.add_argument("--data", type=Path, default=None)

    explain = sub.add_parser("explain", help="explain a server reply (SMTP or POP3), in English or Chinese")
    explain.add_argument("lines", nargs="+", metavar="REPLY LINE", help="the reply, one argument per line")
    explain.add_argument("--lang", choices=("en", "zh"), default=None, help="language (default: MAILLAB_LANG or the locale)")
    explain.add_argument("--after", default=None, metavar="COMMAND", help="the command this reply answers, e.g. 'AUTH LOGIN'")
    explain.add_argument("--profile", default=None, help="persona whose notes apply (qq, sina, ...)")
    explain.add_argument("--protocol", choices=("smtp", "pop3"), default=None, help="default: guessed from the reply")

    validate = sub.add_parser("validate", help="check a command line before sending it; exit 1 on an error")
    validate.add_argument("line", metavar="COMMAND LINE")
    validate.add_argument("--protocol", choices=("smtp", "pop3"), default="smtp")
    validate.add_argument("--profile", default="rfc", help="persona the line is meant for (default rfc)")
    validate.add_argument("--lang", choices=("en", "zh"), default=None)
    validate.add_argument(
        "--after", action="append", default=[], metavar="LINE",
        help="a line already sent in this session, in order (repeatable), e.g. --after 'EHLO x'",
    )

    classroom = sub.add_parser("classroom", help="classroom labs: set up a class, watch it, grade it")
    classroom_sub = classroom.add_subparsers(dest="classroom_command", parser_class=_Parser, required=True)
    init = classroom_sub.add_parser("init", help="write a class folder: config, students, handouts")
    init.add_argument("dir", type=Path)
    init.add_argument("--students", type=int, required=True, help="number of students")
    init.add_argument("--prefix", default="s", help="student id prefix (default s: s01, s02 ...)")
    init.add_argument("--profile", default="rfc", help="persona or profile file for the class (default rfc)")
    init.add_argument("--lessons", type=Path, default=None, metavar="PACK", help="a lesson folder for the class")
    init.add_argument("--domain", default=None, help="mail domain of the students (default: the profile's first local domain)")
    init.add_argument("--server-host", default=None, help="address students connect to (printed on handouts)")
    watch = classroom_sub.add_parser("watch", help="live dashboard of the class")
    watch.add_argument("dir", type=Path)
    watch.add_argument("--lesson", default=None, help="lesson id whose steps the dashboard follows")
    grade = classroom_sub.add_parser("grade", help="grade a lesson from the server's side")
    grade.add_argument("dir", type=Path)
    grade.add_argument("--lesson", required=True, help="lesson id")
    grade.add_argument("--format", choices=("csv", "md"), default="md")

    cert = sub.add_parser("cert", help="print the path of maillab's local CA certificate")
    cert.add_argument("--data", type=Path, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `maillab profiles show qq | head` is fine
        sys.stderr.close()
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from simulator.tui.app import run_app

        return run_app(args)
    if args.command == "serve":
        from .serve import run_serve

        return run_serve(args)
    if args.command == "profiles":
        from .profiles import run_profiles

        return run_profiles(args)
    if args.command == "lint":
        from .lint import run_lint

        return run_lint(args)
    if args.command == "lessons":
        from .lessons import run_lessons

        return run_lessons(args)
    if args.command == "progress":
        from .lessons import run_progress

        return run_progress(args)
    if args.command == "explain":
        from .explain import run_explain

        return run_explain(args)
    if args.command == "validate":
        from .validate import run_validate

        return run_validate(args)
    if args.command == "classroom":
        from .classroom import run_classroom

        return run_classroom(args)
    if args.command == "cert":
        from mockservers.tls import ensure_certificates

        files = ensure_certificates(args.data or default_data_dir())
        print(files.ca_cert)
        return EXIT_OK
    parser.print_help()
    return EXIT_OK
