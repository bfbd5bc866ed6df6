"""Foreground servers for `maillab serve`: the reactor in the main thread, a clean stop on a signal."""

from __future__ import annotations

import dataclasses
import signal
import sys
from typing import Any, Callable

from simulator.defaults import EXIT_OK, EXIT_USAGE


def fail(message: str) -> int:
    print(f"maillab serve: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def classroom_event_text(profile: Any) -> Any:
    """A class's log never names an unknown login: it is often a secret typed as the user name."""

    def text(event: Any) -> str:
        user = event.fields.get("user") if isinstance(event.fields, dict) else None
        if event.kind == "authentication failed" and user and profile.find_account(str(user)) is None:
            reason = event.detail.rpartition(": ")[2] if ": " in event.detail else ""
            event = dataclasses.replace(event, detail=f"<not an account>: {reason}" if reason else "<not an account>")
        return str(event)

    return text


def run_reactor(
    start: Callable[[], Any], stop: Callable[[], Any], started: Callable[[Any], None], on_exit: Callable[[], None] | None = None
) -> int:
    """Run the reactor in the foreground: `start()`, then `started(result)`; SIGINT/SIGTERM stop.

    A port that cannot be bound ends the command with one clear line and exit status 2.
    """
    from twisted.internet import error as twisted_error
    from twisted.internet import reactor

    outcome: dict[str, Any] = {"status": EXIT_OK}

    def failed(failure: Any) -> None:
        if failure.check(twisted_error.CannotListenError):
            value = failure.value
            reason = getattr(value.socketError, "strerror", None) or str(value.socketError)
            outcome["message"] = f"cannot listen on {value.interface or '*'}:{value.port}: {reason}"
        else:
            outcome["message"] = failure.getErrorMessage()
        outcome["status"] = EXIT_USAGE
        reactor.stop()

    def on_signal(signum: int, frame: object) -> None:
        reactor.callFromThread(shutdown)

    def shutdown() -> None:
        if reactor.running:
            d = stop()
            d.addBoth(lambda _: reactor.stop())

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    reactor.callWhenRunning(lambda: start().addCallbacks(started, failed))
    reactor.run(installSignalHandlers=False)
    if on_exit is not None:
        on_exit()  # e.g. the log lines still queued
    if outcome["status"] != EXIT_OK:
        return fail(outcome["message"])
    print("maillab serve: stopped", flush=True)
    return EXIT_OK
