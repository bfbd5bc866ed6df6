"""`maillab serve`: the mock servers in the foreground, one log line per session event."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from simulator.defaults import DEFAULT_POP3_PORT, DEFAULT_SMTP_PORT, data_dir

from .foreground import classroom_event_text
from .foreground import fail as _fail
from .foreground import run_reactor
from .options import port

HELP = "run the mock SMTP and POP3 servers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="rfc", help="persona name (rfc, qq, sina, ...) or a profile .toml path")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--smtps-port", type=port, default=None, metavar="N", help="SMTP over implicit TLS (off unless given)")
    parser.add_argument("--pop3s-port", type=port, default=None, metavar="N", help="POP3 over implicit TLS (off unless given)")
    parser.add_argument(
        "--account", action="append", default=[], metavar="ADDRESS:SECRET",
        help="add a mailbox and its login secret (repeatable); its domain becomes local. "
        "Visible in `ps`: prefer --account-file or --account-env",
    )
    parser.add_argument(
        "--account-file", type=Path, action="append", default=[], metavar="FILE",
        help="read ADDRESS:SECRET lines from FILE (# comments; repeatable)",
    )
    parser.add_argument(
        "--account-env", action="append", default=[], metavar="VAR",
        help="read ADDRESS:SECRET lines from the environment variable VAR (repeatable)",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="RULE",
        help="add a fault rule, e.g. 'RCPT#2 452 4.5.3 Too many recipients' (repeatable; see docs/profiles.md)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for probability faults (same seed, same failures)")
    parser.add_argument("--quiet", action="store_true", help="print only the listening lines")
    parser.add_argument(
        "--world", nargs="?", const="", default=None, metavar="FILE",
        help="run a lab internet: several mail domains with DNS, relays and bounces (the bundled world without FILE)",
    )
    parser.add_argument(
        "--classroom", type=Path, default=None, metavar="DIR",
        help="serve a class folder made by `maillab classroom init` (its profile, students and data)",
    )




def _classroom(args: argparse.Namespace) -> tuple[Any, Path, int, int, str]:
    """The class folder's profile (students as accounts), data directory, ports and a banner line.

    The class's ports apply unless --smtp-port/--pop3-port are given (0 picks free ports).
    """
    from simulator.classroom.config import ClassroomError, class_profile, load_class

    if args.data is not None:
        raise ClassroomError("--data cannot be used with --classroom (the class keeps its data in DIR/data)")
    if args.account or args.account_file or args.account_env:
        raise ClassroomError("--account cannot be used with --classroom (the accounts are in DIR/students.csv)")
    if args.profile != "rfc":
        raise ClassroomError("--profile cannot be used with --classroom (the profile is in DIR/class.toml)")
    config = load_class(args.classroom)
    profile = class_profile(config)
    smtp_port = config.smtp_port if args.smtp_port is None else args.smtp_port
    pop3_port = config.pop3_port if args.pop3_port is None else args.pop3_port
    banner = (
        f"class {config.dir}: {len(config.students)} students @{config.domain}, "
        f"at most {profile.policies.max_connections_per_client or 'unlimited'} connections per client and protocol"
    )
    return profile, config.data_dir, smtp_port, pop3_port, banner


def _is_world_class(directory: Path) -> bool:
    """Whether class.toml says `world = ...` (the whole check is load_class's, in either branch)."""
    from simulator.classroom.config import load_class

    return load_class(directory).is_world


def _accounts_from_files_and_env(args: argparse.Namespace) -> list[Any]:
    """--account-file and --account-env: secrets that never appear on the command line."""
    from mockservers.accounts import parse_account_lines

    accounts = []
    for path in args.account_file:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read account file {path}: {error.strerror}") from None
        accounts += parse_account_lines(text, str(path))
    for name in args.account_env:
        if name not in os.environ:
            raise ValueError(f"--account-env {name}: no such environment variable")
        accounts += parse_account_lines(os.environ[name], f"${name}")
    return accounts


def run(args: argparse.Namespace) -> int:
    from mockservers.accounts import parse_account
    from mockservers.profile import load_profile
    from mockservers.profile_files import ProfileError

    if args.world is not None:
        from .serve_world import run_world

        return run_world(args)
    banner = None
    smtp_port = DEFAULT_SMTP_PORT if args.smtp_port is None else args.smtp_port
    pop3_port = DEFAULT_POP3_PORT if args.pop3_port is None else args.pop3_port
    if getattr(args, "classroom", None) is not None:
        from simulator.classroom.config import ClassroomError

        try:
            if _is_world_class(args.classroom):
                from .serve_world import run_class_world

                return run_class_world(args)
            profile, directory, smtp_port, pop3_port, banner = _classroom(args)
        except ClassroomError as error:
            return _fail(str(error))
        accounts = []
    else:
        try:
            profile = load_profile(args.profile)
        except ProfileError as error:
            return _fail(str(error))
        try:
            accounts = [parse_account(spec) for spec in args.account] + _accounts_from_files_and_env(args)
        except ValueError as error:
            return _fail(str(error))
        directory = data_dir(args.data)
    from mailprotocol.faults import FaultError, rule_from_spec

    try:
        rules = [rule_from_spec(spec, index) for index, spec in enumerate(args.fault)]
    except FaultError as error:
        return _fail(str(error))
    if rules or args.seed is not None:
        profile = profile.with_faults(rules, args.seed)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _fail(f"cannot use data directory {directory}: {error.strerror}")

    from mockservers.output import EXIT_DRAIN_SECONDS, LogWriter
    from mockservers.server import MailServers

    try:
        servers = MailServers(
            profile,
            directory,
            host=args.host,
            smtp_port=smtp_port,
            pop3_port=pop3_port,
            smtps_port=args.smtps_port,
            pop3s_port=args.pop3s_port,
            extra_accounts=accounts,
        )
    except (OSError, ValueError) as error:
        return _fail(str(error))

    log = LogWriter(sys.stdout, max_lines=servers.profile.policies.log_queue_lines)

    def started(listening: list[Any]) -> None:
        for item in listening:
            print(f"{item} (profile {servers.profile.name})", flush=True)
        if banner is not None:
            print(banner, flush=True)
            if args.host in ("127.0.0.1", "localhost", "::1"):
                print(f"note: only this machine can connect ({args.host}); for the students' machines add --host 0.0.0.0", flush=True)
        if not args.quiet:
            show = classroom_event_text(servers.profile) if banner is not None else str
            # Off the reactor thread: a paused terminal or a full pipe drops log lines, not sessions.
            servers.events.subscribe(lambda event: log.line(show(event)))

    return run_reactor(servers.start, servers.stop, started, on_exit=lambda: log.drain(EXIT_DRAIN_SECONDS))
