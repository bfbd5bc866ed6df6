"""What a receiving server may check about a message before it says 250, and the answer.

Pure data shared by the SMTP session (which calls `ServerContext.message_check` at the end of
DATA) and the checks that plug in there, such as a world's SPF/DKIM/DMARC (world/senderauth.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arrival:
    """One message as the receiving server sees it: the connecting hop and the envelope."""

    client_ip: str
    helo: str
    sender: str
    recipients: tuple[str, ...]
    content: bytes


@dataclass(frozen=True)
class Verdict:
    """Headers to add above the message (e.g. Authentication-Results), or a refusal.

    `reject` is a persona reply key with its placeholder values; `reason` goes to the log.
    """

    headers: bytes = b""
    reject: tuple[str, dict[str, Any]] | None = None
    reason: str = ""
