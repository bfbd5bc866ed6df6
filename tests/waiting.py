"""Waiting for an event with a deadline: the one place tests wait (no fixed sleeps).

`wait_until` is for plain threads (sockets, subprocesses, files, the reactor thread's state);
`wait_for` is for a Textual app under a Pilot, whose event loop must keep running while we wait.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

#: How long a test waits for an event before it fails (the servers answer in milliseconds).
DEADLINE = 10.0


def wait_until(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "the condition", interval: float = 0.01) -> Any:
    """Poll `condition()` until it returns something true; its value, or AssertionError at the deadline.

    For events nobody announces to the test (a connection slot freed, a record written by the
    output thread, a line in a log): no fixed sleep, and no longer than the event takes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # the poll interval, not a wait for the event


async def wait_for(pilot: Any, condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "the TUI") -> None:
    """Let the app run until `condition()` holds (network replies arrive asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await pilot.pause(0.05)
