"""Session transcripts as JSON lines, for instructors' review and the TUI's live view.

Pure standard library. One file per session under DATA/transcripts/<YYYY-MM-DD>/<session>.jsonl;
each record is one `write()` of one line, so a crash can at most truncate the last line, and
readers skip such a line. Secrets never reach the file: protocol code passes client lines through
`mockservers.masking.mask_line`, the rule the app's panes use too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .output import OutputQueue, write_all

__all__ = [
    "TranscriptWriter",
    "follow",
    "iter_transcripts",
    "read_transcript",
]

_RESERVED_FIELDS = frozenset({"t", "session", "dir", "event"})


def _check_session_id(session_id: str) -> str:
    """Session ids become file names, so they must not be able to leave the directory."""
    if (
        not session_id
        or session_id.startswith(".")
        or any(char in session_id for char in "/\\\0")
        or any(ord(char) < 0x20 for char in session_id)
    ):
        raise ValueError(f"session id {session_id!r} cannot be used as a file name")
    return session_id


_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)
_quote = json.encoder.encode_basestring  # C-accelerated JSON string quoting (non-ASCII kept as is)


class TranscriptWriter:
    """Append the records of one session to its own JSON-lines file.

    The file is opened once, in append mode. Records collect in memory and leave in one `write()`
    per `flush()`: the session flushes after each batch of input it handled, so a live view is at
    most one round trip behind and a busy server makes one system call per batch, not per line.
    A failing disk stops the transcript (see `error`) instead of breaking the mail session.
    """

    _made_dirs: set[Path] = set()

    def __init__(
        self,
        directory: Path,
        session_id: str,
        protocol: str,
        peer: str,
        profile: str,
        *,
        clock: Callable[[], float] = time.time,
        flush: bool = True,
        sink: OutputQueue | None = None,
    ) -> None:
        self.session_id = _check_session_id(session_id)
        self._session_json = _quote(self.session_id)
        self._clock = clock
        day = time.strftime("%Y-%m-%d", time.localtime(clock()))
        self.path = Path(directory) / day / f"{session_id}.jsonl"
        self.error: OSError | None = None
        self._closed = False
        self._file: int | None = None  # a raw descriptor: open() would add fstat, ioctl and lseek calls
        self._opened = False
        self._pending: list[str] = []
        self._sink = sink
        self.dropped_lines = 0  # lines the sink had no room for, reported in the file when it has
        self._unreported_drops = 0
        if sink is None:
            self._open()
        self._write({"dir": "e", "event": "open", "protocol": protocol, "peer": peer, "profile": profile})
        if flush:  # a session passes False and flushes once its greeting is recorded too
            self.flush()

    def _open(self) -> None:
        """Create the day's directory (once per process) and the file; run where the writes run."""
        self._opened = True
        try:
            if self.path.parent not in TranscriptWriter._made_dirs:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                TranscriptWriter._made_dirs.add(self.path.parent)
            self._file = os.open(self.path, _OPEN_FLAGS, 0o600)  # message heads: owner only, like mail
        except OSError as error:
            self.error = error

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def _stopped(self) -> bool:
        return self._closed or self.error is not None

    def _write(self, fields: dict[str, object]) -> None:
        if self._stopped:
            return
        record = {"t": round(self._clock(), 6), "session": self.session_id, **fields}
        self._pending.append(_ENCODER.encode(record))

    def _line(self, direction: str, line: str) -> None:
        """The hot path (every command and reply): no dict, no encoder object, one C call."""
        if self._stopped:
            return
        self._pending.append(
            f'{{"t": {self._clock():.6f}, "session": {self._session_json}, "dir": "{direction}", "line": {_quote(line)}}}'
        )

    def flush(self) -> None:
        """Write the records collected so far, whole lines only, in one system call.

        With a sink (an `OutputQueue`) the write happens in the sink's thread; when the sink is
        full the records are dropped, and a `dropped` record says how many in the next write.
        """
        if not self._pending or self._stopped:
            self._pending.clear()
            return
        lines = len(self._pending)
        if self._unreported_drops:
            self._pending.insert(0, _ENCODER.encode(self._drop_record()))
        data = ("\n".join(self._pending) + "\n").encode("utf-8", "replace")
        self._pending.clear()
        if self._sink is None:
            self._write_now(data)
        elif self._sink.submit(self._write_now, data):
            self._unreported_drops = 0
        else:
            self.dropped_lines += lines
            self._unreported_drops += lines

    def _drop_record(self) -> dict[str, object]:
        return {"t": round(self._clock(), 6), "session": self.session_id, "dir": "e", "event": "dropped",
                "detail": f"{self._unreported_drops} transcript lines dropped (the disk was too slow)",
                "lines": self._unreported_drops}

    def _write_now(self, data: bytes) -> None:
        if not self._opened:
            self._open()
        if self._file is None:
            return
        try:
            write_all(self._file, data)  # O_APPEND: each write lands at the end
        except OSError as error:
            self.error = error
            self._release()

    def client(self, line: str) -> None:
        """A line the client sent (already redacted by the caller)."""
        self._line("c", line)

    def server(self, line: str) -> None:
        """A line the server sent."""
        self._line("s", line)

    def event(self, event: str, **fields: object) -> None:
        """Something that is not a line: TLS started, authenticated, fault injected, ..."""
        clash = _RESERVED_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"transcript fields {sorted(clash)} are reserved")
        self._write({"dir": "e", "event": event, **fields})

    def close(self) -> None:
        """Write the closing record once and release the file; later calls do nothing."""
        if self._closed:
            return
        self._write({"dir": "e", "event": "close"})
        if self._sink is None:
            self.flush()
            self._closed = True
            self._release()
            return
        if self._unreported_drops:
            self._pending.insert(0, _ENCODER.encode(self._drop_record()))
        data = ("\n".join(self._pending) + "\n").encode("utf-8", "replace") if self._pending else b""
        self._pending.clear()
        self._closed = True
        self._sink.call(self._finish, data)  # never dropped: the file must be released

    def _finish(self, data: bytes) -> None:
        if data and self.error is None:
            self._write_now(data)
        self._release()

    def _release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            try:
                os.close(handle)
            except OSError:
                pass

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _parse_lines(chunk: bytes) -> list[dict]:
    """Decode complete JSON lines, skipping any that are damaged or not records."""
    records = []
    for raw in chunk.split(b"\n"):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_transcript(path: Path) -> list[dict]:
    """All records of a transcript; a last line cut short by a crash is skipped."""
    data = Path(path).read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    records = _parse_lines(complete)
    if tail.strip():
        records.extend(_parse_lines(tail))
    return records


def iter_transcripts(directory: Path) -> Iterator[Path]:
    """Every transcript under `directory`, oldest modification first (then by path)."""
    found = []
    for path in Path(directory).rglob("*.jsonl"):
        try:
            found.append((path.stat().st_mtime_ns, str(path), path))
        except FileNotFoundError:
            continue
    found.sort(key=lambda item: (item[0], item[1]))
    for _, _, path in found:
        yield path


def follow(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Records appended since `offset` and the offset to pass next time.

    Only complete lines are consumed, so a record being written right now is picked up whole on
    the next call. A file that shrank below `offset` (replaced) is read again from the start.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if offset > size:
                offset = 0
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return _parse_lines(data[: end + 1]), offset + end + 1
