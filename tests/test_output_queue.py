"""The output thread joins what waits together: one write per file per batch, order kept."""

from __future__ import annotations

import threading

from mockservers.output import OutputQueue


class Recorder:
    """A file stand-in: remembers every write call."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        self.name = name
        self.log = log

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))

    def close(self) -> None:
        self.log.append((self.name, b"<closed>"))


def hold_writer(queue: OutputQueue) -> threading.Event:
    """Park the writer thread inside a call, so what is submitted next waits together.

    Returns the gate to open. Waits until the writer is really inside the call: only then is it
    sure that nothing submitted afterwards joins the batch the writer already took.
    """
    inside, gate = threading.Event(), threading.Event()

    def park() -> None:
        inside.set()
        gate.wait(10)

    queue.call(park)
    assert inside.wait(10), "the writer thread never started"
    return gate


def test_records_that_wait_together_reach_each_file_in_one_write_in_order():
    queue = OutputQueue("test", coalesce=0)
    gate = hold_writer(queue)  # a burst queues up behind the parked writer
    log: list[tuple[str, bytes]] = []
    first, second = Recorder("a", log), Recorder("b", log)
    for number in range(50):
        assert queue.submit(first.write, f"a{number}\n".encode())
        assert queue.submit(second.write, f"b{number}\n".encode())
    gate.set()
    assert queue.drain(10)
    assert log == [
        ("a", b"".join(f"a{n}\n".encode() for n in range(50))),
        ("b", b"".join(f"b{n}\n".encode() for n in range(50))),
    ]
    assert queue.queued_bytes == 0


def test_a_call_is_a_barrier_for_what_was_submitted_before_it():
    queue = OutputQueue("test", coalesce=0)
    gate = hold_writer(queue)
    log: list[tuple[str, bytes]] = []
    transcript = Recorder("t", log)
    queue.submit(transcript.write, b"one\n")
    queue.submit(transcript.write, b"two\n")
    queue.call(transcript.close)
    queue.submit(transcript.write, b"three\n")
    gate.set()
    assert queue.drain(10)
    assert log == [("t", b"one\ntwo\n"), ("t", b"<closed>"), ("t", b"three\n")]


def test_a_burst_submitted_while_the_writer_sleeps_costs_few_writes():
    """The writer lets output gather after a wake-up, so a burst is not a wake-up per record."""
    queue = OutputQueue("test", coalesce=0.2)
    log: list[tuple[str, bytes]] = []
    transcript = Recorder("t", log)
    for number in range(200):
        queue.submit(transcript.write, f"{number}\n".encode())
    assert queue.drain(10)
    assert b"".join(data for _, data in log) == b"".join(f"{n}\n".encode() for n in range(200))
    assert len(log) <= 2  # the first record may be written before the rest arrive
