"""`maillab validate [--after LINE]... 'COMMAND LINE'`: will this server accept the line, and why not?

The lines given with --after are replayed first, each answered as the persona would answer it (a
STARTTLS the server accepts counts as a finished TLS handshake), so the line is checked where the
learner's session is. Exit 1 when the server will refuse the line (an error diagnostic), else 0.
"""

from __future__ import annotations

import argparse
import sys

from simulator.defaults import EXIT_FAILED, EXIT_OK, EXIT_USAGE

HELP = "check a command line before sending it; exit 1 on an error"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("line", metavar="COMMAND LINE")
    parser.add_argument("--protocol", choices=("smtp", "pop3"), default="smtp")
    parser.add_argument("--profile", default="rfc", help="persona the line is meant for (default rfc)")
    parser.add_argument(
        "--after", action="append", default=[], metavar="LINE",
        help="a line already sent in this session, in order (repeatable), e.g. --after 'EHLO x'",
    )


def run(args: argparse.Namespace) -> int:
    from mockservers.profile import load_profile
    from mockservers.profile_files import ProfileError
    from simulator.engine.checks import is_refusal
    from simulator.engine.diagnostics import label
    from simulator.engine.knowledge import resolve_language
    from simulator.engine.validate import build_session, describe_state, expected_reply, validate_line

    try:
        profile = load_profile(args.profile)
    except ProfileError as error:
        print(f"maillab validate: {error}", file=sys.stderr)
        return EXIT_USAGE
    lang = resolve_language(args.lang)
    colon = "：" if lang == "zh" else ": "
    session = build_session(args.after, protocol=args.protocol, profile=profile)
    diagnostics = validate_line(args.line, session=session, profile=profile, lang=lang)
    for diagnostic in diagnostics:
        print(diagnostic.render_text())
    if not any(d.is_error for d in diagnostics):
        print(label("ok", lang))
    if not any(is_refusal(d.code) for d in diagnostics):
        reply = expected_reply(args.line, session, profile)
        if reply:
            print(f"{label('expected_reply', lang)}{colon}{reply[0]}")
            for line in reply[1:]:
                print(f"    {line}")
    print(describe_state(session, lang))
    return EXIT_FAILED if any(d.is_error for d in diagnostics) else EXIT_OK
