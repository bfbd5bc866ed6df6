"""Helpers for the classroom tests (no tests here): a class lesson pack and a telnet-like client
that speaks from its own loopback address (127.0.0.N), as a student's machine would."""

from __future__ import annotations

import base64
import contextlib
import socket
import textwrap
from pathlib import Path

CLASS_LESSON = textwrap.dedent(
    """\
    ---
    id: class-exchange
    title: Write to your partner, then read your own mail
    protocol: both
    profile: rfc
    ---
    # Class exchange

    :::: step ehlo
    ```expect
    > EHLO {domain}
    < 250
    ```
    ::: hint
    `EHLO my-laptop`
    :::
    ```solution
    EHLO learner.example
    ```
    ::::

    :::: step login
    ```expect
    > AUTH LOGIN
    < 334
    > {base64:$user}
    < 334
    > {base64:$secret}
    < 235
    ? authenticated as $user
    ```
    ```expect
    > AUTH PLAIN {plain:$user:$secret}
    < 235
    ? authenticated as $user
    ```
    ::: hint
    `AUTH PLAIN` and the payload from your handout.
    :::
    ```solution
    AUTH PLAIN {plain:$user:$secret}
    ```
    ::::

    :::: step send
    ```expect
    > .
    < 250
    ! mailbox $to has subject "hello from $local"
    ```
    ::: hint
    `MAIL FROM`, `RCPT TO`, `DATA`, `Subject: hello from you`, an empty line, a body, `.`
    :::
    ```solution
    MAIL FROM:<$user>
    RCPT TO:<$to>
    DATA
    Subject: hello from $local

    hi
    .
    ```
    ::::

    :::: step fetch
    ```expect
    > PASS $secret
    < +OK
    ? authenticated as $user
    ```
    ::: hint
    `USER` then `PASS` on the POP3 port.
    :::
    ```solution
    @connect pop3
    USER $user
    PASS $secret
    ```
    ::::

    :::: step list
    ```expect
    > LIST
    < +OK
    ```
    ::: hint
    `LIST`
    :::
    ```solution
    LIST
    ```
    ::::
    """
)


def write_pack(root: Path) -> Path:
    pack = root / "pack"
    pack.mkdir(parents=True, exist_ok=True)
    (pack / "class-exchange.md").write_text(CLASS_LESSON, encoding="utf-8")
    return pack


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def plain(user: str, secret: str) -> str:
    return b64(f"\0{user}\0{secret}")


class Student:
    """A socket client like telnet, from `source` (127.0.0.N is loopback too on Linux)."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "Student":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed (buffer {self.buffer!r})")
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\r\n")
        return raw.decode("utf-8", "replace")

    def reply(self) -> list[str]:
        """One SMTP reply (all its lines) or one POP3 status line."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def cmd(self, line: str) -> str:
        """Send a line, return the last line of its reply."""
        self.send(line)
        return self.reply()[-1]

    def multiline(self, line: str) -> list[str]:
        self.send(line)
        lines = [self.line()]
        if lines[0].startswith("+OK"):
            while lines[-1] != ".":
                lines.append(self.line())
        return lines

    def message(self, sender: str, recipient: str, subject: str) -> str:
        assert self.cmd(f"MAIL FROM:<{sender}>").startswith("250")
        assert self.cmd(f"RCPT TO:<{recipient}>").startswith("250")
        assert self.cmd("DATA").startswith("354")
        for text in (f"Subject: {subject}", "", "hello"):
            self.send(text)
        return self.cmd(".")
