"""`maillab explain 'REPLY LINE' ['MORE LINES'...]`: what a server reply means, in English or Chinese."""

from __future__ import annotations

import argparse
import sys

from simulator.defaults import EXIT_OK, EXIT_USAGE

HELP = "explain a server reply (SMTP or POP3), in English or Chinese"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lines", nargs="+", metavar="REPLY LINE", help="the reply, one argument per line")
    parser.add_argument("--after", default=None, metavar="COMMAND", help="the command this reply answers, e.g. 'AUTH LOGIN'")
    parser.add_argument("--profile", default=None, help="persona whose notes apply (qq, sina, ...)")
    parser.add_argument("--protocol", choices=("smtp", "pop3"), default=None, help="default: guessed from the reply")


def run(args: argparse.Namespace) -> int:
    from simulator.engine import explain_reply
    from simulator.engine.knowledge import resolve_language
    from simulator.engine.replies import looks_like_pop3, looks_like_smtp, split_lines

    lines: list[str] = []
    for argument in args.lines:
        lines += split_lines(argument)
    persona = None
    if args.profile:
        persona = _persona_name(args.profile)
        if persona is None:
            return EXIT_USAGE
    protocol = args.protocol
    if protocol is None:
        first = next((line for line in lines if line.strip()), "")
        protocol = "pop3" if looks_like_pop3(first) and not looks_like_smtp(first) else "smtp"
    explanation = explain_reply(
        lines, protocol=protocol, after=args.after, persona=persona, lang=resolve_language(args.lang)
    )
    print(explanation.render_text())
    return EXIT_OK


def _persona_name(name_or_path: str) -> str | None:
    """A bundled persona name as given, or the `name` of a profile file (None after an error)."""
    from mockservers.profile import load_profile
    from mockservers.profile_files import ProfileError

    try:
        return load_profile(name_or_path).name
    except ProfileError as error:
        print(f"maillab explain: {error}", file=sys.stderr)
        return None
