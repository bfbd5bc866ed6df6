"""Output that must never block the reactor: transcripts and log lines, written by a thread.

A mail session must not wait for a disk or a terminal. A terminal that is paused (Ctrl-S), a pipe
nobody reads, or a slow disk would otherwise stop every session of the server, because the
reactor thread would sit in `write()`. Here the reactor thread only appends bytes to a bounded
queue; one daemon thread per queue performs the writes. When the queue is full the new output is
dropped and counted - never the sessions. Pure standard library (no Twisted).
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_LOG_LINES", "LogWriter", "OutputQueue", "safe_text", "write_all"]

#: Bytes of transcript output waiting for the disk before new output is dropped (and counted):
#: the default of the profile policy `transcript_queue_bytes`.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

#: Log lines waiting for a slow reader (a paused terminal, a full pipe) before they are dropped:
#: the default of the profile policy `log_queue_lines`.
DEFAULT_MAX_LOG_LINES = 10_000

#: Seconds the interpreter waits at exit for queued output to reach its file.
EXIT_DRAIN_SECONDS = 2.0

#: Seconds the writer rests after each batch, so under load output gathers (a busy server's sessions
#: each add a record per command) and costs one wake-up and one write per file per interval instead
#: of one per record: every wake-up is a thread switch and a fight for the interpreter lock with the
#: reactor. A live view is at most this much later than without it.
COALESCE_SECONDS = 0.005


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t", "\x1b": "\\e"}


def safe_text(text: str) -> str:
    """`text` made harmless for a log line, a dashboard or a terminal: control characters escaped.

    ESC (which starts ANSI/OSC sequences that recolour, retitle or rewrite a terminal), CR and
    LF (which forge extra lines), the other C0/C1 controls, DEL and the Unicode line separators and
    bidirectional overrides become visible escapes such as `\\e` or `\\x07`; a backslash stays as it is.
    """
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda match: _NAMED.get(match.group(), f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100 else f"\\u{ord(match.group()):04x}"), text)


class OutputQueue:
    """A bounded queue of writes done by one daemon thread, in submission order.

    `submit` never blocks: it returns False (and writes nothing) when `max_bytes` are already
    waiting. `call` queues an action that must happen whatever the bound (closing a file), so a
    session's file is always released. Actions run in the order they were queued, except that
    the data of several `submit`s of one action that wait together reach it in one call (in
    their order, concatenated): a submitted action writes bytes, and one write is cheaper than
    many. A `call` is a barrier: what was submitted before it is written before it runs.
    """

    def __init__(self, name: str, max_bytes: int = DEFAULT_MAX_BYTES, coalesce: float = COALESCE_SECONDS) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.coalesce = coalesce
        # (action, args, size, merge): merge is True for submit()ted writes, False for call()s.
        self._items: deque[tuple[Callable[..., object], tuple[object, ...], int, bool]] = deque()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._writer_waiting = False
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.dropped_bytes = 0  # read by tests and benchmarks

    def submit(self, action: Callable[[bytes], object], data: bytes, cost: int | None = None) -> bool:
        """Queue `action(data)`; False (dropped) when the queue already holds `max_bytes`.

        `cost` counts against the bound instead of the byte length (a log counts lines).
        """
        size = len(data) if cost is None else cost
        with self._lock:
            if self._queued_bytes + size > self.max_bytes and self._queued_bytes:
                self.dropped_bytes += size
                return False
            self._push(action, (data,), size, True)
        return True

    def call(self, action: Callable[..., object], *args: object) -> None:
        """Queue `action(*args)` whatever the bound: releasing resources is never dropped."""
        with self._lock:
            self._push(action, args, 0, False)

    def _push(self, action: Callable[..., object], args: tuple[object, ...], size: int, merge: bool) -> None:
        self._items.append((action, args, size, merge))
        self._queued_bytes += size
        self._stopping = False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"maillab-{self.name}-writer", daemon=True)
            self._thread.start()
        elif self._writer_waiting:
            self._wakeup.notify()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far has been written (True) or `timeout` passes (False)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._items and not self._busy, timeout)

    def stop(self) -> None:
        """End the writer thread once everything queued is written (a later write starts another)."""
        with self._lock:
            self._stopping = True
            if self._writer_waiting:
                self._wakeup.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._items:
                    self._busy = False
                    self._idle.notify_all()
                    if self._stopping:
                        self._thread = None
                        return
                    self._writer_waiting = True
                    self._wakeup.wait()
                    self._writer_waiting = False
                self._busy = True
                batch = list(self._items)
                self._items.clear()
            self._perform(batch)
            if self.coalesce > 0:
                # At most one batch per interval: the first record after a quiet spell is written at
                # once, what follows gathers meanwhile (submitters never wait for this).
                time.sleep(self.coalesce)

    def _perform(self, batch: list[tuple[Callable[..., object], tuple[object, ...], int, bool]]) -> None:
        """Run a batch in order, each action's submitted data joined into one call."""
        writes: dict[tuple[int, object], tuple[Callable[..., object], list[bytes]]] = {}
        sizes = 0
        for action, args, size, merge in batch:
            if merge:
                # Bound methods are new objects on every attribute access: key by owner and function
                # (the batch keeps the owners alive, so their ids stay theirs while it runs).
                key = (id(getattr(action, "__self__", action)), getattr(action, "__func__", None))
                writes.setdefault(key, (action, []))[1].append(args[0])  # type: ignore[arg-type]
                sizes += size
                continue
            sizes = self._write_merged(writes, sizes)
            self._run_action(action, args)
        self._write_merged(writes, sizes)

    def _write_merged(
        self, writes: dict[tuple[int, object], tuple[Callable[..., object], list[bytes]]], sizes: int
    ) -> int:
        for action, chunks in writes.values():
            self._run_action(action, (chunks[0] if len(chunks) == 1 else b"".join(chunks),))
        writes.clear()
        if sizes:
            with self._lock:
                self._queued_bytes -= sizes
        return 0

    @staticmethod
    def _run_action(action: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            action(*args)
        except Exception:  # a broken file must not stop the other writes
            pass


class LogWriter:
    """Log lines to a stream (the terminal of `maillab serve`) without ever blocking the caller.

    Lines wait in a queue of at most `max_lines`; when the reader stalls and the queue is full,
    new lines are dropped and counted, and the reader sees "N log lines dropped" in their place
    as soon as it reads again.
    """

    def __init__(self, stream: TextIO, max_lines: int = DEFAULT_MAX_LOG_LINES) -> None:
        self._stream = stream
        self._queue = OutputQueue("log", max_bytes=max(1, max_lines))  # each line costs 1
        atexit.register(self._queue.drain, EXIT_DRAIN_SECONDS)
        self._dropped = 0
        self._dropped_lock = threading.Lock()

    @property
    def dropped(self) -> int:
        """Lines dropped and not yet reported."""
        return self._dropped

    def line(self, text: str) -> None:
        """Queue one line; drop it (counted) when the reader is too far behind."""
        data = (text + "\n").encode("utf-8", "replace")
        if self._queue.submit(self._write, data, cost=1):
            return
        with self._dropped_lock:
            self._dropped += 1
            first = self._dropped == 1
        if first:  # say so once the reader catches up, even if no other line follows
            self._queue.call(self._write, b"")

    def drain(self, timeout: float | None = None) -> bool:
        return self._queue.drain(timeout)

    def _write(self, data: bytes) -> None:
        with self._dropped_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            data = f"{dropped} log lines dropped (the output was not being read)\n".encode() + data
        if not data:
            return
        buffer = getattr(self._stream, "buffer", None)
        if buffer is not None:
            self._stream.flush()
            buffer.write(data)
            buffer.flush()
        else:
            self._stream.write(data.decode("utf-8", "replace"))
            self._stream.flush()


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is out (a pipe or a file may take a short write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
