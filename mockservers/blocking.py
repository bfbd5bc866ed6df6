"""Blocking store work (fsync) in a few worker threads, handed over with as few wake-ups as possible.

Every SMTP message is stored off the reactor thread, so the handover is paid per message. Twisted's
`deferToThread` wakes an idle pool thread through its team coordinator for every call and the
reactor for every result; on a busy server each wake-up is a thread switch and a fight for the
interpreter lock with the reactor (a profile of 20 concurrent senders showed the handover at 12 %
of the reactor's time). Here a worker that finishes a job takes the next queued one without
sleeping, an idle worker is woken only when one sleeps, and results that finish while the reactor
has not yet taken the previous ones go back together in one `callFromThread`. Deferreds fire in
the reactor thread, in the order their jobs finished.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["BlockingWorkers", "DEFAULT_WORKERS"]

#: Worker threads at most, as many as Twisted's pool: the fsyncs of concurrent deliveries overlap
#: on a slow disk. A thread starts only when more jobs wait than workers are free, so a server
#: storing one message at a time runs one.
DEFAULT_WORKERS = 10

#: Seconds a worker waits for a job before its thread ends (a quiet server keeps no threads).
IDLE_SECONDS = 10.0


class BlockingWorkers:
    """Run functions in up to `max_workers` threads; each call returns a Deferred fired in the reactor."""

    def __init__(self, reactor: Any, max_workers: int = DEFAULT_WORKERS, name: str = "store") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._reactor = reactor
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._quiet = threading.Condition(self._lock)
        self._jobs: deque[tuple[defer.Deferred, Callable[..., Any], tuple[Any, ...]]] = deque()
        self._results: list[tuple[defer.Deferred, bool, Any]] = []
        self._handing_back = False  # a callFromThread with results is on its way to the reactor
        self._threads = 0
        self._sleeping = 0
        self._running = 0  # jobs being run right now
        self._stopping = False
        self.handovers = 0  # callFromThread calls made (read by tests: fewer than results under load)
        reactor.addSystemEventTrigger("during", "shutdown", self.stop)

    def run(self, function: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Queue `function(*args)`; the Deferred fires (in the reactor thread) with its result."""
        deferred: defer.Deferred = defer.Deferred()
        with self._lock:
            self._jobs.append((deferred, function, args))
            if self._sleeping:
                self._wakeup.notify()
            elif self._threads < self._max_workers and len(self._jobs) > self._threads - self._running:
                # More jobs wait than there are workers about to be free (starting, or between jobs).
                self._threads += 1
                threading.Thread(target=self._work, name=f"maillab-{self._name}-{self._threads}", daemon=True).start()
        return deferred

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    if self._stopping:
                        self._threads -= 1
                        self._quiet.notify_all()
                        return
                    self._sleeping += 1
                    woken = self._wakeup.wait(IDLE_SECONDS)
                    self._sleeping -= 1
                    if not woken and not self._jobs:
                        self._threads -= 1
                        self._quiet.notify_all()
                        return
                deferred, function, args = self._jobs.popleft()
                self._running += 1
            try:
                result, ok = function(*args), True
            except BaseException:  # handed to the Deferred's errback, as deferToThread does
                result, ok = Failure(), False
            with self._lock:
                self._running -= 1
                self._results.append((deferred, ok, result))
                if not self._jobs and not self._running:
                    self._quiet.notify_all()
                if self._handing_back:
                    continue  # the reactor has not taken the earlier results yet: these go with them
                self._handing_back = True
                self.handovers += 1
            self._reactor.callFromThread(self._hand_back)

    def _hand_back(self) -> None:
        """In the reactor thread: fire the Deferreds of every job finished so far."""
        with self._lock:
            results, self._results = self._results, []
            self._handing_back = False
        for deferred, ok, result in results:
            if ok:
                deferred.callback(result)
            else:
                deferred.errback(result)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait (not in the reactor thread) until no job is queued or running; False on timeout."""
        with self._lock:
            return self._quiet.wait_for(lambda: not self._jobs and not self._running, timeout)

    def stop(self) -> None:
        """Let the workers finish what is queued, then end (a later `run` starts new ones)."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
            self._quiet.wait_for(lambda: self._threads == 0, 30.0)
            self._stopping = False
