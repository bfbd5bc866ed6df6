"""Lab time: the world's waits (greylisting, retries, queue lifetime) run `scale` times faster.

A lesson cannot wait Postfix's 300 s before the first retry; with `time_scale = 60` the same
schedule takes 5 real seconds and every number the learner sees (greylisting's "try again in 300
seconds", the queue's next attempt) stays the real one. Session timeouts are not scaled: a learner
typing in telnet is never hurried, so `callLater` keeps real seconds.
"""

from __future__ import annotations

import time
from typing import Any, Callable


class LabClock:
    """An IReactorTime whose `seconds()` runs `scale` times faster than the reactor's."""

    def __init__(self, reactor: Any, scale: float = 1.0, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be greater than 0")
        self.reactor = reactor
        self.scale = float(scale)
        self._real_start = reactor.seconds()
        self._lab_start = time.time() if start is None else start

    def seconds(self) -> float:
        """Lab time as a Unix epoch: real time at start, then `scale` lab seconds per real second."""
        return self._lab_start + (self.reactor.seconds() - self._real_start) * self.scale

    def callLater(self, delay: float, function: Callable[..., Any], *args: Any, **kw: Any) -> Any:  # noqa: N802
        """Real seconds (session timeouts, tarpits): see the module docstring."""
        return self.reactor.callLater(delay, function, *args, **kw)

    def call_after_lab(self, lab_delay: float, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function` after `lab_delay` lab seconds."""
        return self.reactor.callLater(max(0.0, lab_delay) / self.scale, function, *args)

    def getDelayedCalls(self) -> Any:  # noqa: N802
        return self.reactor.getDelayedCalls()
