"""`maillab` with no subcommand: the Textual app, embedded servers or a classroom server."""

from __future__ import annotations

import argparse

HELP = "the app (the default when no subcommand is given)"


def run(args: argparse.Namespace) -> int:
    from simulator.defaults import DEFAULT_POP3_PORT, DEFAULT_SMTP_PORT, EXIT_OK, data_dir
    from simulator.engine.knowledge import resolve_language
    from simulator.tui.app import MaillabApp

    directory = data_dir(args.data)
    directory.mkdir(parents=True, exist_ok=True)
    MaillabApp(
        data_dir=directory,
        lessons_dirs=list(args.lessons),
        lang=resolve_language(args.lang),
        remote_host=args.server,
        smtp_port=DEFAULT_SMTP_PORT if args.smtp_port is None else args.smtp_port,
        pop3_port=DEFAULT_POP3_PORT if args.pop3_port is None else args.pop3_port,
        login=args.login,
        other_login=args.other_login,
    ).run()
    return EXIT_OK
