"""The parser machinery every subcommand shares, and the global options, each defined once.

A global option works before or after the subcommand (`maillab --data D serve` and `maillab serve
--data D`). argparse gives a subcommand a fresh namespace, so the copy under a subcommand stores
into a separate name and `merge_global_options` folds it into the real one afterwards: a value
given after the subcommand wins, and a repeatable option (`--lessons`) keeps both sides' values.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.defaults import DEFAULT_POP3_PORT, DEFAULT_SMTP_PORT, EXIT_USAGE


def port(text: str) -> int:
    """A TCP port number (0 lets the system pick a free one where a command listens)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535, got {value}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one clear line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"maillab: {message}\n")


@dataclass(frozen=True)
class GlobalOption:
    """One global option: its flags, its argparse keywords and its value when not given."""

    flags: tuple[str, ...]
    options: dict[str, Any]
    default: Any = None
    repeatable: bool = False

    @property
    def dest(self) -> str:
        return self.flags[0].lstrip("-").replace("-", "_")


GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption(("--data",), {"type": Path, "metavar": "DIR", "help": "data directory: mailboxes, transcripts, certificates, progress (default: $MAILLAB_DATA or the user data directory)"}),
    GlobalOption(("--lang",), {"choices": ("en", "zh"), "help": "language of the app and of every command's output (default: $MAILLAB_LANG or the locale)"}),
    GlobalOption(("--lessons",), {"type": Path, "action": "append", "metavar": "DIR", "help": "add an instructor's lesson folder (repeatable)"}, default=(), repeatable=True),
    GlobalOption(("--server",), {"metavar": "HOST", "help": "the app uses a classroom server instead of its embedded ones"}),
    GlobalOption(("--login",), {"metavar": "ADDRESS", "help": "your address on a classroom server"}),
    GlobalOption(("--other-login",), {"metavar": "ADDRESS", "help": "a world class: your address on its other domain ($other_user in lessons)"}),
    GlobalOption(("--smtp-port",), {"type": port, "metavar": "N", "help": f"SMTP port: where `serve` listens (0 picks a free one), or the port of --server (default {DEFAULT_SMTP_PORT})"}),
    GlobalOption(("--pop3-port",), {"type": port, "metavar": "N", "help": f"POP3 port: where `serve` listens (0 picks a free one), or the port of --server (default {DEFAULT_POP3_PORT})"}),
)

_AFTER = "after_subcommand__"


def add_global_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """Put every global option on `parser` (the top-level one, or a subcommand's)."""
    group = parser.add_argument_group("global options (before or after the subcommand)")
    for option in GLOBAL_OPTIONS:
        if top_level:
            default = list(option.default) if option.repeatable else option.default
            group.add_argument(*option.flags, dest=option.dest, default=default, **option.options)
        else:
            group.add_argument(*option.flags, dest=_AFTER + option.dest, default=argparse.SUPPRESS, **option.options)


def merge_global_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fold the values given after the subcommand into the global ones."""
    for option in GLOBAL_OPTIONS:
        later = vars(args).pop(_AFTER + option.dest, None)
        if later is None:
            continue
        if option.repeatable:
            setattr(args, option.dest, [*getattr(args, option.dest), *later])
        else:
            setattr(args, option.dest, later)
    return args


@dataclass
class Subcommands:
    """Adds subcommand parsers, each with the global options."""

    action: Any
    parsers: list[argparse.ArgumentParser] = field(default_factory=list)

    def add(self, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = self.action.add_parser(name, help=help, description=help, **kwargs)
        add_global_options(parser, top_level=False)
        return parser


def subcommands(parser: argparse.ArgumentParser, dest: str, *, required: bool = False) -> Subcommands:
    """A subcommand slot on `parser` whose parsers all know the global options."""
    return Subcommands(parser.add_subparsers(dest=dest, parser_class=Parser, required=required))
