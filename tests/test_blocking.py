"""Store work in worker threads: results fire in the reactor thread, bursts cost few handovers."""

from __future__ import annotations

import threading
import time

import pytest

from mockservers.blocking import BlockingWorkers
from waiting import wait_until


class QueueReactor:
    """Collects callFromThread calls; the test runs them as the reactor thread would."""

    def __init__(self) -> None:
        self.calls: list = []
        self.lock = threading.Lock()
        self.triggers: list = []

    def callFromThread(self, function, *args):  # noqa: N802
        with self.lock:
            self.calls.append((function, args))

    def addSystemEventTrigger(self, phase, event, function):  # noqa: N802
        self.triggers.append((phase, event, function))

    def run_pending(self) -> int:
        with self.lock:
            calls, self.calls = self.calls, []
        for function, args in calls:
            function(*args)
        return len(calls)


def test_results_and_errors_come_back_through_the_reactor():
    reactor = QueueReactor()
    workers = BlockingWorkers(reactor, max_workers=2)
    got, failed = [], []
    workers.run(lambda a, b: a + b, 2, 3).addCallback(got.append)
    workers.run(lambda: 1 / 0).addErrback(lambda failure: failed.append(failure.check(ZeroDivisionError)))
    assert workers.drain(10)
    assert not got and not failed  # nothing fires outside the reactor thread
    wait_until(lambda: reactor.calls)
    while len(got) + len(failed) < 2:
        reactor.run_pending()
    assert got == [5] and failed == [ZeroDivisionError]
    assert ("during", "shutdown", workers.stop) in reactor.triggers


def test_at_most_max_workers_run_at_once():
    reactor = QueueReactor()
    workers = BlockingWorkers(reactor, max_workers=3)
    gate = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    def job():
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        gate.wait(10)
        with lock:
            running[0] -= 1

    for _ in range(12):
        workers.run(job)
    wait_until(lambda: running[0] == 3)
    gate.set()
    assert workers.drain(10)
    assert running[1] == 3


def test_a_burst_goes_back_in_few_handovers():
    reactor = QueueReactor()
    workers = BlockingWorkers(reactor, max_workers=2)
    got: list[int] = []
    for number in range(200):
        workers.run(lambda n: n, number).addCallback(got.append)
    assert workers.drain(10)
    wait_until(lambda: reactor.calls)
    while len(got) < 200:
        reactor.run_pending()
    assert sorted(got) == list(range(200))
    assert workers.handovers < 20  # the reactor was not taking results: they waited together


def test_stop_finishes_queued_work_and_later_work_starts_new_threads():
    reactor = QueueReactor()
    workers = BlockingWorkers(reactor, max_workers=1)
    done: list[int] = []
    for number in range(5):
        workers.run(lambda n: done.append(n) or n, number)
    workers.stop()
    assert done == [0, 1, 2, 3, 4]
    workers.run(lambda: done.append(5))
    assert workers.drain(10) and done[-1] == 5


def test_max_workers_must_be_positive():
    with pytest.raises(ValueError):
        BlockingWorkers(QueueReactor(), max_workers=0)
