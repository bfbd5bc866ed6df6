"""The `maillab` command: one module per subcommand, each with `add_arguments` and `run`.

The command modules import only argparse at load time and their real dependencies inside `run`,
so `maillab --help` and the app start fast and Twisted is only imported by what runs servers.
Exit statuses and the data directory come from `simulator.defaults`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Sequence

from simulator.defaults import EXIT_OK

from . import app, cert, classroom, explain, lessons, lint, profiles, progress, queue, serve, validate
from .options import Parser, add_global_options, merge_global_options, subcommands

#: Every subcommand, in the order `maillab --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "serve": serve,
    "queue": queue,
    "profiles": profiles,
    "lint": lint,
    "lessons": lessons,
    "progress": progress,
    "explain": explain,
    "validate": validate,
    "classroom": classroom,
    "cert": cert,
}


def build_parser() -> Parser:
    parser = Parser(prog="maillab", description="Learn SMTP and POP3 on mock mail servers that explain every reply.")
    add_global_options(parser, top_level=True)
    slot = subcommands(parser, "command")
    for name, module in COMMANDS.items():
        module.add_arguments(slot.add(name, module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = merge_global_options(build_parser().parse_args(argv))
        module = COMMANDS.get(args.command) if args.command else app
        return module.run(args)
    except BrokenPipeError:  # `maillab profiles show qq | head` is fine
        sys.stderr.close()
        return EXIT_OK
