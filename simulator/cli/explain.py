"""`maillab explain 'REPLY LINE' ['MORE LINES'...]`: what a server reply means, in English or Chinese."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_OK, EXIT_USAGE


def run_explain(args: argparse.Namespace) -> int:
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
    from mockservers.profile import ProfileError, load_profile

    try:
        return load_profile(name_or_path).name
    except ProfileError as error:
        print(f"maillab explain: {error}", file=sys.stderr)
        return None
