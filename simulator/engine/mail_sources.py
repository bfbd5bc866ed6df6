"""Where the inspector finds mail: every server data directory under the app's data directory
(a world's domains, lesson labs, `maillab serve --data`), its mailboxes and their messages."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path

from mockservers.store import MailStore, StoredMessage

#: How deep under the data directory a server's data may sit (world/<name>/<domain> is 3).
MAX_DEPTH = 4
#: Octets of a message read to list its From and Subject.
HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class MailSource:
    """One server's data directory; `label` is its path under the data directory."""

    label: str
    root: Path


@dataclass(frozen=True)
class MessageEntry:
    uid: str
    size: int
    sender: str
    subject: str
    stored: StoredMessage


def find_sources(data_dir: Path) -> list[MailSource]:
    """Every directory that holds `mailboxes/`, nearest first, sorted by label."""
    found: list[MailSource] = []
    data_dir = Path(data_dir)

    def visit(directory: Path, depth: int) -> None:
        if (directory / "mailboxes").is_dir():
            label = directory.relative_to(data_dir).as_posix()
            found.append(MailSource(label if label != "." else ".", directory))
        if depth >= MAX_DEPTH:
            return
        try:
            children = sorted(p for p in directory.iterdir() if p.is_dir() and p.name not in ("mailboxes", "transcripts", "tls", "queue"))
        except OSError:
            return
        for child in children:
            visit(child, depth + 1)

    if data_dir.is_dir():
        visit(data_dir, 0)
    return sorted(found, key=lambda s: s.label)


def mailboxes(source: MailSource) -> list[str]:
    return MailStore(source.root).mailbox_addresses()


def messages(source: MailSource, address: str) -> list[MessageEntry]:
    """The mailbox's messages with From and Subject decoded (RFC 2047), oldest first."""
    store = MailStore(source.root)
    entries = []
    for stored in store.messages(address):
        try:
            with open(stored.path, "rb") as handle:
                head = handle.read(HEAD_BYTES)
        except OSError:
            continue
        parsed = email.message_from_bytes(re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0] + b"\n\n", policy=email.policy.default)
        try:
            sender, subject = str(parsed.get("From", "")), str(parsed.get("Subject", ""))
        except Exception:  # noqa: BLE001 - a broken header is listed, not fatal
            sender, subject = "?", "?"
        entries.append(MessageEntry(stored.uid, stored.size, sender, subject, stored))
    return entries


def read(source: MailSource, address: str, entry: MessageEntry) -> bytes:
    return MailStore(source.root).read_message(address, entry.stored)
