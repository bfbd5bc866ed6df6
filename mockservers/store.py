"""Mailboxes on disk: one Maildir per account plus an outbound queue that never leaves the machine.

Pure standard library and free of Twisted, so the servers (which call `deliver` from worker
threads), the simulator and instructors' scripts share one store. Messages are kept with LF line
endings, as qmail, Postfix and Dovecot write Maildir files (so mutt or s-nail read them); CRLF
exists only on the wire. The file name carries both sizes the Dovecot way, `,S=<file size>,W=<wire
size>`, so POP3 counts CRLF octets (RFC 1939 LIST/STAT) without reading the file. Files written
with CRLF by older versions are still read and sized correctly.

Layout under ROOT::

    mailboxes/<address>/{tmp,new,cur}/<unique name>,S=<size>,W=<wire size>[:2,<flags>]
    queue/<unique name>.eml  + queue/<unique name>.json
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "AddressError",
    "MailStore",
    "QuotaExceeded",
    "StoreError",
    "StoredMessage",
    "normalize_address",
    "to_stored",
    "to_wire",
]

MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_PART_OCTETS = 64
MAX_UID_LENGTH = 70

_MAILDIR_SUBDIRS = ("tmp", "new", "cur")
_INFO_SEPARATOR = ":2,"
_UID_PATTERN = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_UID_LENGTH)
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
# os.link failures that mean "this filesystem cannot hard-link", not "the disk is broken".
_LINK_UNSUPPORTED = frozenset(
    code
    for code in (
        errno.EXDEV,
        errno.EPERM,
        errno.EMLINK,
        errno.EACCES,
        getattr(errno, "ENOTSUP", None),
        getattr(errno, "EOPNOTSUPP", None),
        getattr(errno, "ENOSYS", None),
    )
    if code is not None
)


#: A CR that does not start a CRLF (kept as it is in the file form).
_BARE_CR = re.compile(rb"\r(?!\n)")


def to_stored(content: bytes) -> bytes:
    """The file form of a message: every line ends with LF (a CRLF, or a bare LF, becomes LF).

    When every CR starts a CRLF (as in any message a client sent with DATA), dropping the CRs is
    the same and about three times faster than replacing the two-octet CRLF (0.8 against 2.2 ms
    per MB): this runs once per delivery on a thread that holds the interpreter lock.
    """
    if _BARE_CR.search(content) is None:
        return content.replace(b"\r", b"")
    return content.replace(b"\r\n", b"\n")


def to_wire(content: bytes) -> bytes:
    """The wire form: every line ends with CRLF, whatever endings the message arrived or is stored with.

    One rule for every line, so POP3's dot-stuffing (RFC 1939 3) sees every line: a bare LF
    followed by "." can no longer end a message early in the reader's eyes.
    """
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def wire_size(stored: bytes) -> int:
    """Octets of `to_wire(stored)` without building it.

    Counting the two-octet CRLF is slow (a quarter of a 100 KB RETR's time); a message without
    any CR, as the store keeps them, needs only the one-octet count.
    """
    newlines = stored.count(b"\n")
    if b"\r" not in stored:
        return len(stored) + newlines
    return len(stored) - stored.count(b"\r\n") + newlines


_SIZES = re.compile(r",S=(\d+),W=(\d+)$")


class AddressError(ValueError):
    """An address cannot name a mailbox (it is malformed or could escape the store's directory)."""


class StoreError(OSError):
    """The store could not keep a message durably; nothing was made visible to any recipient."""


class QuotaExceeded(StoreError):
    """The message would take a mailbox over its quota; nothing was stored for anyone."""

    def __init__(self, address: str, usage: int, size: int, quota: int) -> None:
        super().__init__(errno.EDQUOT, f"{address}: {usage} + {size} octets over the quota of {quota}")
        self.address = address


@dataclass(frozen=True)
class StoredMessage:
    """One message in a mailbox, as POP3 lists it."""

    uid: str
    size: int
    path: Path


def normalize_address(address: str) -> str:
    """Return the canonical form of a mailbox address, or raise `AddressError` saying what is wrong.

    The result is used as a directory name, so anything that could change the meaning of a path
    (separators, NUL, dot names, control characters) is refused rather than escaped.
    """
    if not isinstance(address, str):
        raise AddressError(f"address must be text, not {type(address).__name__}")
    text = address.strip().lower()
    if not text:
        raise AddressError("address is empty")
    for bad, label in (("/", "'/'"), ("\\", "'\\\\'"), ("\0", "NUL")):
        if bad in text:
            raise AddressError(f"address contains {label}")
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F or 0x80 <= ord(char) < 0xA0:
            raise AddressError(f"address contains control character {char!r}")
        if char.isspace():
            raise AddressError("address contains whitespace")
    local, at, domain = text.rpartition("@")
    if not at:
        raise AddressError("address has no '@'")
    if not local:
        raise AddressError("address has an empty local part")
    if not domain:
        raise AddressError("address has an empty domain")
    for part, label in ((local, "local part"), (domain, "domain")):
        if part in (".", ".."):
            raise AddressError(f"{label} is {part!r}")
        if part.startswith("."):
            raise AddressError(f"{label} starts with '.'")
    if len(text.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise AddressError(f"address is longer than {MAX_ADDRESS_OCTETS} octets")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        raise AddressError(f"local part is longer than {MAX_LOCAL_PART_OCTETS} octets")
    return text


def _check_uid(uid: str) -> str:
    """Refuse uids that are not Maildir unique names, so they can never act as paths."""
    if not isinstance(uid, str) or not _UID_PATTERN.fullmatch(uid):
        raise ValueError(f"invalid message uid {uid!r}")
    if "/" in uid or "\\" in uid or uid.startswith(".") or _INFO_SEPARATOR in uid:
        raise ValueError(f"invalid message uid {uid!r}")
    return uid


def _uid_of(filename: str) -> str | None:
    """The unique name of a Maildir file name (sizes and flags cut off), or None for other files."""
    uid = filename.split(_INFO_SEPARATOR, 1)[0].split(",", 1)[0]
    try:
        return _check_uid(uid)
    except ValueError:
        return None


def _sort_key(uid: str) -> tuple[int, str]:
    """Delivery order: the leading nanosecond timestamp first, the full name as tie-break."""
    head = uid.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, uid)


def _fsync_dir(directory: Path) -> None:
    """Make a directory's entries (new links, unlinks) survive a crash or power loss."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except (PermissionError, IsADirectoryError):  # Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


class _GroupSync:
    """fsync one directory on behalf of every thread that changed it (group commit).

    A caller needs an fsync that *started* after its own change (a link into new/) was made. When
    none is running, the caller runs one; when one is running (it may have started too early), the
    caller waits for it to end and for the next one, which the first waiting caller runs for all
    of them. N deliveries arriving together into one mailbox cost about two directory fsyncs
    instead of N, and no caller returns before a sync that covers its change has completed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = False
        self._started = 0  # generations started
        self._finished = 0  # the last generation finished (they finish in order: one at a time)
        self._errors: dict[int, OSError] = {}

    def sync(self, directory: Path) -> None:
        with self._cond:
            need = self._started + 1  # the first generation that starts after our change
            while self._finished < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                generation = self._started
                error: OSError | None = None
                self._cond.release()
                try:
                    _fsync_dir(directory)
                except OSError as problem:
                    error = problem
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._finished = generation
                    if error is not None:
                        self._errors[generation] = error
                        for old in [g for g in self._errors if g < generation - 1000]:
                            del self._errors[old]
                    self._cond.notify_all()
            failed = self._errors.get(need)
        if failed is not None:  # a fresh exception per caller: threads must not share one traceback
            raise OSError(failed.errno, f"fsync of {directory} failed: {failed.strerror}")


def _write_new_file(path: Path, content: bytes, mode: int = 0o600) -> None:
    """Create `path` (never overwriting), write everything and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        view = memoryview(content)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_file(path: Path, expected: int) -> bytes:
    """A whole file, read with one `read` when it is at most `expected` octets long.

    A read shorter than asked means the end of a regular file, so the extra octet asked for tells
    without another call whether anything is left (a file that grew is read on to its end).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        want = max(expected, 0) + 1
        data = os.read(fd, want)
        if len(data) < want:
            return data
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _owner_only(directory: Path) -> None:
    """chmod 0700 a directory this user owns (a shared one, not ours, is left as it is)."""
    try:
        if directory.stat().st_uid == os.getuid() and directory.stat().st_mode & 0o077:
            os.chmod(directory, 0o700)
    except (OSError, AttributeError):  # no getuid on Windows
        pass


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _safe_hostname() -> str:
    """The host part of unique names: printable, no path or info separators, short."""
    name = _HOST_UNSAFE.sub("_", socket.gethostname() or "localhost")
    return name[:20] or "localhost"


class MailStore:
    """Maildir mailboxes and the outbound queue under one root directory.

    Safe to share between threads: unique names come from a locked counter and every file is
    created with O_EXCL, so concurrent deliveries never collide.
    """

    def __init__(self, root: Path, *, quota: int = 0, min_free: int = 0) -> None:
        """`quota`: octets (wire size) a mailbox may hold, 0 = no limit; `min_free`: octets the
        disk must keep free, below which deliveries are refused (Postfix's queue_minfree)."""
        self.root = Path(root)
        self.quota = quota
        self.min_free = min_free
        self._usage: dict[str, int] = {}  # mailbox -> octets held, counted once, then kept up to date
        self._usage_lock = threading.Lock()
        self._mailboxes = self.root / "mailboxes"
        self._queue = self.root / "queue"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _owner_only(self.root)  # mail, transcripts and keys live below: nobody else may even list them
        self._mailboxes.mkdir(exist_ok=True, mode=0o700)
        self._queue.mkdir(exist_ok=True, mode=0o700)
        self._name_lock = threading.Lock()
        self._counter = itertools.count(1)
        self._last_ns = 0
        self._host = _safe_hostname()
        self._locks_guard = threading.Lock()
        self._locked: set[str] = set()
        self._ready: set[Path] = set()  # mailboxes known to have tmp/ new/ cur/
        self._syncers: dict[Path, _GroupSync] = {}
        self._syncers_guard = threading.Lock()

    def _sync_dir(self, directory: Path) -> None:
        """fsync `directory`, sharing the fsync with concurrent callers (see `_GroupSync`)."""
        syncer = self._syncers.get(directory)
        if syncer is None:
            with self._syncers_guard:
                syncer = self._syncers.setdefault(directory, _GroupSync())
        syncer.sync(directory)

    # -- naming -------------------------------------------------------------------------------

    def _unique_name(self) -> str:
        """A Maildir unique name, sortable by time and unique across threads and processes."""
        with self._name_lock:
            now = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = now
            count = next(self._counter)
        micro = (now // 1000) % 1_000_000
        name = f"{now:019d}.M{micro:06d}P{os.getpid()}Q{count}.{self._host}"
        return name[:MAX_UID_LENGTH]

    # -- mailboxes ----------------------------------------------------------------------------

    def mailbox_dir(self, address: str) -> Path:
        """The Maildir of `address` (which need not exist yet)."""
        return self._mailboxes / normalize_address(address)

    def ensure_mailbox(self, address: str) -> None:
        """Create the Maildir of `address` if missing; durable, idempotent, race-free."""
        box = self.mailbox_dir(address)
        if all((box / sub).is_dir() for sub in _MAILDIR_SUBDIRS):
            self._ready.add(box)
            return
        created_box = not box.exists()
        box.mkdir(exist_ok=True, mode=0o700)
        for sub in _MAILDIR_SUBDIRS:
            (box / sub).mkdir(exist_ok=True, mode=0o700)
        _fsync_dir(box)
        if created_box:
            _fsync_dir(self._mailboxes)
        self._ready.add(box)

    def has_mailbox(self, address: str) -> bool:
        """Whether `address` has a mailbox; an invalid address simply has none."""
        try:
            box = self.mailbox_dir(address)
        except AddressError:
            return False
        return (box / "new").is_dir() and (box / "cur").is_dir()

    def mailbox_addresses(self) -> list[str]:
        """Every address that has a mailbox, sorted."""
        found = []
        for entry in os.scandir(self._mailboxes):
            if not entry.is_dir():
                continue
            try:
                if normalize_address(entry.name) == entry.name:
                    found.append(entry.name)
            except AddressError:
                continue
        return sorted(found)

    def usage(self, address: str) -> int:
        """Octets (wire size) in the mailbox: counted from the file names once, then kept current."""
        key = normalize_address(address)
        with self._usage_lock:
            if key in self._usage:
                return self._usage[key]
        total = sum(message.size for message in self.messages(key))
        with self._usage_lock:
            return self._usage.setdefault(key, total)

    def over_quota(self, address: str, extra: int = 0) -> bool:
        """Whether `extra` more octets would take the mailbox over the quota (already full: extra 0)."""
        if not self.quota:
            return False
        usage = self.usage(address)
        return usage + extra > self.quota if extra else usage >= self.quota

    def _count(self, address: str, delta: int) -> None:
        with self._usage_lock:
            if address in self._usage:
                self._usage[address] = max(0, self._usage[address] + delta)

    def _check_space(self, boxes: Sequence[Path], size: int) -> None:
        """Refuse before writing anything: a disk under `min_free`, or a mailbox over its quota."""
        if self.min_free and shutil.disk_usage(self.root).free - size < self.min_free:
            raise StoreError(errno.ENOSPC, f"less than {self.min_free} octets would stay free on the disk")
        if self.quota:
            for box in boxes:
                usage = self.usage(box.name)
                if usage + size > self.quota:
                    raise QuotaExceeded(box.name, usage, size, self.quota)

    # -- delivery -----------------------------------------------------------------------------

    def deliver(self, recipients: Sequence[str], content: bytes) -> str:
        """Durably store one message for every recipient; returns the unique name (message id).

        The file is written and fsynced once in the first recipient's tmp/, hard-linked (or copied
        where links are impossible) into each recipient's new/, and every new/ directory is fsynced
        before returning (one fsync may cover several concurrent deliveries: it starts after their
        links were made), so the SMTP server may say 250 only after this returns. On any error
        every link already made is removed: either all recipients get the message or none does,
        and a client retrying after a 4xx never causes duplicates.
        """
        if isinstance(recipients, str):
            raise TypeError("recipients must be a sequence of addresses, not one string")
        boxes: list[Path] = []
        for address in recipients:
            box = self.mailbox_dir(address)
            if box not in boxes:
                boxes.append(box)
        if not boxes:
            raise ValueError("deliver() needs at least one recipient")
        content = to_stored(bytes(content))
        size = wire_size(content)
        self._check_space(boxes, size)
        name = self._unique_name()
        file_name = f"{name},S={len(content)},W={size}"
        staging = boxes[0] / "tmp" / file_name
        extra_tmp: list[Path] = []
        placed: list[Path] = []
        try:
            for box in boxes:
                if box not in self._ready:  # three stat calls per recipient saved on every delivery
                    self.ensure_mailbox(box.name)
            _write_new_file(staging, content)
            for box in boxes:
                target = box / "new" / file_name
                try:
                    os.link(staging, target)
                except OSError as error:
                    if error.errno not in _LINK_UNSUPPORTED:
                        raise
                    copy = box / "tmp" / f"{file_name}.copy"
                    extra_tmp.append(copy)
                    _write_new_file(copy, content)
                    os.rename(copy, target)
                    extra_tmp.remove(copy)
                placed.append(target)
            for box in boxes:
                self._sync_dir(box / "new")  # group commit: shared with concurrent deliveries
        except OSError as error:
            self._ready.difference_update(boxes)  # a mailbox removed behind our back is made again next time
            for path in (*placed, *extra_tmp, staging):
                _unlink_quietly(path)
            for box in boxes:
                try:
                    _fsync_dir(box / "new")
                except OSError:
                    pass
            if isinstance(error, StoreError):
                raise
            raise StoreError(error.errno, f"could not store message: {error}") from error
        _unlink_quietly(staging)
        for box in boxes:
            self._count(box.name, size)
        return name

    def queue_outbound(self, sender: str, recipients: Sequence[str], content: bytes) -> str:
        """Keep mail accepted for relay in ROOT/queue/; returns its id. Nothing leaves the machine.

        The .eml is written and fsynced first; the .json that makes the entry count is renamed
        into place last, so a crash never leaves a half-written entry that is counted.
        """
        if isinstance(recipients, str):
            raise TypeError("recipients must be a sequence of addresses, not one string")
        rcpts = [str(r).strip() for r in recipients]
        if not rcpts or not all(rcpts):
            raise ValueError("queue_outbound() needs non-empty recipient addresses")
        name = self._unique_name()
        eml = self._queue / f"{name}.eml"
        meta = self._queue / f"{name}.json"
        staging = self._queue / f".{name}.json.tmp"
        now = time.time()
        record = {
            "id": name,
            "sender": sender.strip(),
            "recipients": rcpts,
            "time": now,
            "received": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "size": len(content),
        }
        try:
            _write_new_file(eml, bytes(content), 0o600)  # mail: owner only, like mailbox files
            _write_new_file(staging, json.dumps(record, ensure_ascii=False).encode("utf-8"), 0o600)
            os.replace(staging, meta)
            _fsync_dir(self._queue)
        except OSError as error:
            for path in (staging, meta, eml):
                _unlink_quietly(path)
            raise StoreError(error.errno, f"could not queue message: {error}") from error
        return name

    def queued_count(self, domain: str) -> int:
        """How many queued messages have at least one recipient in `domain` (case-insensitive)."""
        wanted = domain.strip().lstrip("@").lower()
        count = 0
        for entry in os.scandir(self._queue):
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue
            try:
                with open(entry.path, "rb") as handle:
                    record = json.loads(handle.read())
                recipients = record["recipients"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if any(str(r).rpartition("@")[2].strip().rstrip(">").lower() == wanted for r in recipients):
                count += 1
        return count

    def queued(self) -> list[dict]:
        """Every complete queue entry's record (id, sender, recipients, time, and what a relay
        added: attempts, next attempt, last error), oldest first."""
        records = []
        for entry in os.scandir(self._queue):
            if entry.name.startswith(".") or not entry.name.endswith(".json"):
                continue
            try:
                with open(entry.path, "rb") as handle:
                    record = json.loads(handle.read())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                records.append(record)
        return sorted(records, key=lambda r: (r.get("time", 0), r["id"]))

    def read_queued(self, queue_id: str) -> bytes:
        """The message of one queue entry."""
        return (self._queue / f"{_check_uid(queue_id)}.eml").read_bytes()

    def update_queued(self, record: dict) -> None:
        """Replace an entry's record atomically (a relay notes attempts and errors in it)."""
        name = _check_uid(record["id"])
        staging = self._queue / f".{name}.json.tmp"
        _unlink_quietly(staging)
        _write_new_file(staging, json.dumps(record, ensure_ascii=False).encode("utf-8"), 0o600)
        os.replace(staging, self._queue / f"{name}.json")

    def remove_queued(self, queue_id: str) -> None:
        """Drop a finished entry: the record first, so a crash never leaves a counted entry without mail."""
        name = _check_uid(queue_id)
        _unlink_quietly(self._queue / f"{name}.json")
        _unlink_quietly(self._queue / f"{name}.eml")

    # -- reading and removing -----------------------------------------------------------------

    def _files(self, address: str) -> dict[str, Path]:
        """uid -> path for every message in new/ and cur/."""
        box = self.mailbox_dir(address)
        files: dict[str, Path] = {}
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(box / sub))
            except FileNotFoundError:
                continue
            for entry in entries:
                uid = _uid_of(entry.name)
                if uid is None or uid in files:
                    continue
                files[uid] = Path(entry.path)
        return files

    def _find(self, address: str, uid: str) -> Path | None:
        return self._files(address).get(uid)

    def messages(self, address: str) -> list[StoredMessage]:
        """Messages in new/ and cur/ together, oldest delivery first; [] if there is no mailbox.

        `size` is the wire size (CRLF line endings), what POP3 LIST and STAT report: read from
        the file name, or for a file without `,W=` (older versions, other tools) from its bytes.
        """
        found = []
        for uid, path in self._files(address).items():
            base = path.name.split(_INFO_SEPARATOR, 1)[0]
            sizes = _SIZES.search(base)
            if sizes is not None:
                size = int(sizes.group(2))
            else:
                try:
                    size = wire_size(path.read_bytes())
                except FileNotFoundError:
                    continue
            found.append(StoredMessage(uid=uid, size=size, path=path))
        found.sort(key=lambda message: _sort_key(message.uid))
        return found

    def read(self, address: str, uid: str) -> bytes:
        """The message in its wire form (CRLF line endings); KeyError if it is not there."""
        _check_uid(uid)
        path = self._find(address, uid)
        if path is None:
            raise KeyError(uid)
        try:
            return to_wire(path.read_bytes())
        except FileNotFoundError:
            raise KeyError(uid) from None

    def read_message(self, address: str, message: StoredMessage) -> bytes:
        """Like `read`, from the path the listing found first (no lookup); KeyError if it is gone.

        Falls back to `read` when the file was renamed since (another program moved it to cur/).
        """
        return to_wire(self.read_stored(address, message))

    def read_stored(self, address: str, message: StoredMessage) -> bytes:
        """The file's bytes as stored (LF endings, or CRLF for files of older versions).

        For POP3, which frames the lines itself: one open, one read (the listing's wire size is
        never smaller than the file) and one close, where `Path.read_bytes` makes six calls.
        """
        try:
            return _read_file(message.path, message.size)
        except FileNotFoundError:
            _check_uid(message.uid)
            path = self._find(address, message.uid)
            if path is None:
                raise KeyError(message.uid) from None
            try:
                return _read_file(path, message.size)
            except FileNotFoundError:
                raise KeyError(message.uid) from None

    def remove(self, address: str, uids: Iterable[str]) -> None:
        """Delete messages (missing ones are ignored) and make the deletion durable."""
        wanted = [_check_uid(uid) for uid in uids]
        if not wanted:
            return
        touched: set[Path] = set()
        sizes = {message.uid: message for message in self.messages(address)}
        for uid in wanted:
            message = sizes.get(uid)
            if message is None:
                continue
            try:
                os.unlink(message.path)
            except FileNotFoundError:
                continue
            self._count(normalize_address(address), -message.size)
            touched.add(message.path.parent)
        for directory in touched:
            _fsync_dir(directory)

    # -- maildrop locks -----------------------------------------------------------------------

    def try_lock(self, address: str) -> bool:
        """Take the POP3 maildrop lock (RFC 1939: one session per mailbox); True if acquired."""
        key = normalize_address(address)
        with self._locks_guard:
            if key in self._locked:
                return False
            self._locked.add(key)
            return True

    def unlock(self, address: str) -> None:
        """Release the maildrop lock; releasing a lock not held is harmless."""
        key = normalize_address(address)
        with self._locks_guard:
            self._locked.discard(key)
