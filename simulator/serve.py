"""`maillab serve`: the mock servers in the foreground, one log line per session event."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from .cli import EXIT_OK, EXIT_USAGE, default_data_dir


def _fail(message: str) -> int:
    print(f"maillab serve: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run_serve(args: argparse.Namespace) -> int:
    from mockservers.profile import ProfileError, load_profile, parse_account

    try:
        profile = load_profile(args.profile)
    except ProfileError as error:
        return _fail(str(error))
    try:
        accounts = [parse_account(spec) for spec in args.account]
    except ValueError as error:
        return _fail(str(error))
    from mockservers.faults import FaultError, rule_from_spec

    try:
        rules = [rule_from_spec(spec, index) for index, spec in enumerate(args.fault)]
    except FaultError as error:
        return _fail(str(error))
    if rules or args.seed is not None:
        profile = profile.with_faults(rules, args.seed)
    data_dir = args.data or default_data_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _fail(f"cannot use data directory {data_dir}: {error.strerror}")

    from twisted.internet import error as twisted_error
    from twisted.internet import reactor

    from mockservers.server import MailServers

    try:
        servers = MailServers(
            profile,
            data_dir,
            host=args.host,
            smtp_port=args.smtp_port,
            pop3_port=args.pop3_port,
            smtps_port=args.smtps_port,
            pop3s_port=args.pop3s_port,
            extra_accounts=accounts,
        )
    except (OSError, ValueError) as error:
        return _fail(str(error))

    outcome: dict[str, Any] = {"status": EXIT_OK}

    def started(listening: list[Any]) -> None:
        for item in listening:
            print(f"{item} (profile {servers.profile.name})", flush=True)
        if not args.quiet:
            servers.events.subscribe(lambda event: print(event, flush=True))

    def failed(failure: Any) -> None:
        if failure.check(twisted_error.CannotListenError):
            value = failure.value
            reason = getattr(value.socketError, "strerror", None) or str(value.socketError)
            outcome["message"] = f"cannot listen on {value.interface or '*'}:{value.port}: {reason}"
        else:
            outcome["message"] = failure.getErrorMessage()
        outcome["status"] = EXIT_USAGE
        reactor.stop()

    def stop(signum: int, frame: object) -> None:
        reactor.callFromThread(shutdown)

    def shutdown() -> None:
        if reactor.running:
            d = servers.stop()
            d.addBoth(lambda _: reactor.stop())

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    reactor.callWhenRunning(lambda: servers.start().addCallbacks(started, failed))
    reactor.run(installSignalHandlers=False)
    if outcome["status"] != EXIT_OK:
        return _fail(outcome["message"])
    print("maillab serve: stopped", flush=True)
    return EXIT_OK
