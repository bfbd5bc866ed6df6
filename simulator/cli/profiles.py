"""`maillab profiles` and `maillab profiles show NAME`: what each persona is and does."""

from __future__ import annotations

import argparse
import sys

from simulator.defaults import EXIT_OK, EXIT_USAGE

HELP = "list personas, or show one resolved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import subcommands

    show = subcommands(parser, "profiles_command").add("show", "print a persona or profile file, fully resolved")
    show.add_argument("profile", help="persona name or profile .toml path")


def run(args: argparse.Namespace) -> int:
    from mockservers.profile import load_profile
    from mockservers.profile_files import ProfileError, bundled_personas

    if args.profiles_command == "show":
        try:
            profile = load_profile(args.profile)
        except ProfileError as error:
            print(f"maillab profiles: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(describe_profile(profile))
        return EXIT_OK
    names = bundled_personas()
    width = max(len(name) for name in names)
    for name in names:
        try:
            description = load_profile(name).description
        except ProfileError as error:
            description = f"(broken: {error})"
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def describe_profile(profile: object) -> str:
    """The resolved profile as readable text: identity, accounts, policies, capabilities, replies."""
    from dataclasses import asdict, fields

    p = profile  # type: ignore[assignment]
    out = [
        f"persona: {p.name}",
        f"description: {p.description}",
        f"source: {p.source}",
        f"hostname: {p.hostname} (POP3: {p.pop3_hostname})",
        "",
        "demo accounts:",
    ]
    for account in p.accounts:
        extra = f"; web password {account.password!r} is refused" if account.password else ""
        note = f" ({account.note})" if account.note else ""
        out.append(f"  {account.address}  {account.secret_kind}: {account.secret}{extra}{note}")
    out.append(f"local domains: {', '.join(p.local_domains)}")
    if p.relay_domains:
        out.append(f"relay domains: {', '.join(p.relay_domains)}")
    out += ["", "policies:"]
    for f in fields(p.policies):
        out.append(f"  {f.name} = {getattr(p.policies, f.name)!r}")
    quirks = {k: v for k, v in asdict(p.quirks).items() if v not in ((), 0, False, "auto")}
    if quirks:
        out += ["", "quirks (deliberate bugs):"] + [f"  {k} = {v!r}" for k, v in quirks.items()]
    out += ["", "EHLO (plain):"] + [f"  {line}" for line in p.ehlo_reply(False, client="client.example", client_ip="127.0.0.1")]
    if p.ehlo_reply(True) != p.ehlo_reply(False):
        out += ["EHLO (after STARTTLS):"] + [f"  {line}" for line in p.ehlo_reply(True, client="client.example", client_ip="127.0.0.1")]
    out += ["", f"POP3 greeting: {p.pop3_greeting}", "CAPA:"] + [f"  {line}" for line in p.pop3_capa_lines(False)]
    if p.faults:
        out += ["", f"faults (seed {p.seed}):"] + [f"  {rule.describe()}" for rule in p.faults]
    if p.preloaded_mail:
        out += ["", "preloaded mail:"] + [f"  {m.to}: {m.origin} ({len(m.content)} octets)" for m in p.preloaded_mail]
    out += ["", "SMTP replies:"]
    for key in sorted(p.smtp_replies):
        out.append(f"  {key}: " + " / ".join(p.smtp_replies[key]))
    out += ["", "POP3 replies:"]
    for key in sorted(p.pop3_replies):
        out.append(f"  {key}: " + " / ".join(p.pop3_replies[key]))
    return "\n".join(out)
