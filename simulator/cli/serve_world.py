"""`maillab serve --world [FILE]`: a lab internet in the foreground, one log line per event."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from simulator.defaults import data_dir

from .foreground import classroom_event_text
from .foreground import fail as _fail
from .foreground import run_reactor

#: Options of a single-persona `serve` that a world sets in its file instead.
_NOT_WITH_WORLD = (
    ("classroom", None, "--classroom"),
    ("account", [], "--account (accounts are in the world file)"),
    ("fault", [], "--fault"),
    ("profile", "rfc", "--profile (each domain names its persona in the world file)"),
    ("smtps_port", None, "--smtps-port (ports are in the world file)"),
    ("pop3s_port", None, "--pop3s-port (ports are in the world file)"),
    ("smtp_port", None, "--smtp-port (ports are in the world file)"),
    ("pop3_port", None, "--pop3-port (ports are in the world file)"),
    ("host", "127.0.0.1", "--host (a world lives on loopback addresses)"),
)


def run_world(args: argparse.Namespace) -> int:
    from mockservers.world.worldfile import WorldError, load_world

    for name, default, flag in _NOT_WITH_WORLD:
        if getattr(args, name, default) != default:
            return _fail(f"{flag} cannot be used with --world")
    try:
        world = load_world(args.world or None)
    except WorldError as error:
        return _fail(str(error))
    return _serve(args, world, data_dir(args.data) / "world" / world.name)


def run_class_world(args: argparse.Namespace) -> int:
    """`maillab serve --classroom DIR` for a class made with --world: the class's world, its
    students on their two domains, the class's limits on every submission server, its data in
    DIR/data; on 127.0.0.1 unless --host says otherwise."""
    from simulator.classroom.config import ClassroomError, class_limits, class_world, load_class

    for name, default, flag in _NOT_WITH_WORLD:
        if name not in ("classroom", "host", "account") and getattr(args, name, default) != default:
            return _fail(f"{flag.partition(' (')[0]} cannot be used with a world class (its ports are in the world file)")
    if args.data is not None:
        return _fail("--data cannot be used with --classroom (the class keeps its data in DIR/data)")
    if args.account or args.account_file or args.account_env:
        return _fail("--account cannot be used with --classroom (the accounts are in DIR/students.csv)")
    if args.world is not None:
        return _fail("--world cannot be used with --classroom (the class's world is in DIR/class.toml)")
    try:
        config = load_class(args.classroom)
        world = replace(class_world(config), host=args.host)
    except ClassroomError as error:
        return _fail(str(error))
    limits = class_limits(config, _first_profile(world))
    banner = (
        f"class {config.dir}: {len(config.students)} students @{config.domains[0]} and @{config.domains[1]}, "
        f"at most {limits.policies.max_connections_per_client or 'unlimited'} connections per client and protocol"
    )
    return _serve(args, world, config.data_dir, adapt=lambda profile: class_limits(config, profile), banner=banner)


def _first_profile(world: Any) -> Any:
    from mockservers.world.roles import submission_profile

    return submission_profile(world, world.domains[0])


def _serve(args: argparse.Namespace, world: Any, directory: Path, *, adapt: Any = None, banner: str | None = None) -> int:
    """Run a world in the foreground: listening lines, accounts (a class's secrets never), log."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _fail(f"cannot use data directory {directory}: {error.strerror}")

    from mockservers.world.servers import WorldServers

    from mockservers.output import EXIT_DRAIN_SECONDS, LogWriter

    servers = WorldServers(world, directory, adapt=adapt)
    log = LogWriter(sys.stdout)

    def started(_: Any) -> None:
        for domain, item in servers.listening():
            print(f"{domain}: {item}", flush=True)
        for domain in servers.world.domains:
            if banner is None:
                accounts = ", ".join(f"{a.address} ({a.secret})" for a in domain.accounts)
            else:  # a class: the handouts have the secrets, the log never
                accounts = f"{len(domain.accounts)} accounts"
            print(f"{domain.name} ({domain.persona}) at {domain.address}: {accounts}", flush=True)
        print(f"data in {directory}; lab time runs {servers.world.time_scale:g}x", flush=True)
        if banner is not None:
            print(banner, flush=True)
            if args.host in ("127.0.0.1", "localhost", "::1"):
                print(f"note: only this machine can connect ({args.host}); for the students' machines add --host 0.0.0.0", flush=True)
        if not args.quiet:
            texts = {
                name: (classroom_event_text(d.submission.profile) if banner is not None else str)
                for name, d in servers.domains.items()
            }
            # Off the reactor thread: a paused terminal drops log lines, not sessions.
            servers.subscribe(lambda domain, event: log.line(f"[{domain}] {texts.get(domain, str)(event)}"))

    return run_reactor(servers.start, servers.stop, started, on_exit=lambda: log.drain(EXIT_DRAIN_SECONDS))
