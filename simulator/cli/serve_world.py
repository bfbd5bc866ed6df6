"""`maillab serve --world [FILE]`: a lab internet in the foreground, one log line per event."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from simulator.defaults import data_dir

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
    directory = data_dir(args.data) / "world" / world.name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _fail(f"cannot use data directory {directory}: {error.strerror}")

    from mockservers.world.servers import WorldServers

    from mockservers.output import EXIT_DRAIN_SECONDS, LogWriter

    servers = WorldServers(world, directory)
    log = LogWriter(sys.stdout)

    def started(_: Any) -> None:
        for domain, item in servers.listening():
            print(f"{domain}: {item}", flush=True)
        for domain in servers.world.domains:
            accounts = ", ".join(f"{a.address} ({a.secret})" for a in domain.accounts)
            print(f"{domain.name} ({domain.persona}) at {domain.address}: {accounts}", flush=True)
        print(f"data in {directory}; lab time runs {servers.world.time_scale:g}x", flush=True)
        if not args.quiet:
            # Off the reactor thread: a paused terminal drops log lines, not sessions.
            servers.subscribe(lambda domain, event: log.line(f"[{domain}] {event}"))

    return run_reactor(servers.start, servers.stop, started, on_exit=lambda: log.drain(EXIT_DRAIN_SECONDS))
