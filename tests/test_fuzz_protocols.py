"""Fuzzing the SMTP and POP3 sessions over fake transports (tests/fakes.py), with Hypothesis.

Each example is one session: a script of commands drawn from a grammar (valid commands of every
kind, with accounts and secrets the persona knows), some of them mutated (case, bytes inserted,
deleted or replaced, NUL, 8-bit, CR/LF variants, overlong repeats), some plain random bytes. The
script's bytes are fed to the session cut at random TCP boundaries (across commands, inside them,
sometimes one byte at a time). After every chunk and at the end:

* nothing raised out of `dataReceived`, and nothing was logged as a failure (a Twisted log
  observer sees every `log.failure` / error event);
* every reply is well formed. SMTP: each line `ddd`, `ddd-text` or `ddd text`, continuation lines
  share the code and the output never ends inside a multi-line reply. POP3: the output is parsed
  against the script with the server's own framing rules: one status line (`+OK`, `-ERR`, or `+ `
  inside a SASL exchange) per command line, and after `+OK` to CAPA, AUTH, LIST, UIDL, RETR, TOP a
  dot-stuffed body ending with `.`; no reply goes missing and none is left over;
* state invariants: SMTP holds no more message data than the size limit and no more pending input
  than a command line; messages in the store are exactly the ones acknowledged with 250, each
  only in the mailbox of a known account; nothing was queued for relay by a session that never
  authenticated. POP3 removes nothing before QUIT, and after a QUIT in TRANSACTION exactly the
  messages marked with DELE (plus the retrieved ones under EXPIRE 0) are gone.

The CI variant runs a few hundred sessions (~20 s). The long campaign (`--run-slow`, marked slow)
drives at least 1,000,000 command lines through the same checks with a plain PRNG (no shrinking,
much faster per line) and prints lines/s; a failure prints the seed that reproduces it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher

from fakes import Harness
from mockservers.pop3 import POP3Session
from mockservers.profile import Profile, load_profile
from mockservers.profile_files import bundled_personas
from mockservers.session import MAX_HELD_INPUT
from mockservers.smtp import SMTPSession

PERSONAS = bundled_personas()
_PROFILES: dict[str, Profile] = {}


def profile_named(name: str) -> Profile:
    if name not in _PROFILES:
        _PROFILES[name] = load_profile(name)
    return _PROFILES[name]


# --- a source of choices: Hypothesis (shrinks) or a seeded PRNG (fast, for the long campaign) ----


class Source:
    def int(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def bytes(self, size: int) -> bytes:
        raise NotImplementedError

    def choice(self, items: Sequence[Any]) -> Any:
        return items[self.int(0, len(items) - 1)]

    def chance(self, percent: int) -> bool:
        return self.int(0, 99) < percent


class RandomSource(Source):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bytes(self, size: int) -> bytes:
        return self.rng.randbytes(size)


class DrawSource(Source):
    def __init__(self, data: Any) -> None:
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def bytes(self, size: int) -> bytes:
        return self.data.draw(st.binary(min_size=size, max_size=size))


# --- mutations and cuts ---------------------------------------------------------------------------

_SPECIAL = [b"\0", b"\r", b"\n", b"\r\n", b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b" ", b"\t", b".", b"<", b">", b":", b"=", b"\x1b"]


def mutate(src: Source, piece: bytes) -> bytes:
    kind = src.int(0, 10)
    if not piece:
        return src.bytes(src.int(1, 8))
    at = src.int(0, len(piece))
    if kind == 0:  # case flip
        return piece.swapcase()
    if kind == 1:  # insert a special byte
        return piece[:at] + src.choice(_SPECIAL) + piece[at:]
    if kind == 2:  # delete a span
        return piece[:at] + piece[at + src.int(1, 8) :]
    if kind == 3:  # replace one byte
        return piece[:at] + src.bytes(1) + piece[at + 1 :]
    if kind == 4:  # truncate (no line end)
        return piece[:at]
    if kind == 5:  # line-end variants
        body = piece.rstrip(b"\r\n")
        return body + src.choice([b"\n", b"\r", b"\r\0\n", b"\r\r\n", b"\n\r", b"", b"\r\n\r\n"])
    if kind == 6:  # overlong: the line repeated past every limit, sometimes far past
        body = piece.rstrip(b"\r\n")[:64] or b"x"
        times = src.choice([5, 9, 40, 300, 3000])
        return body * times + b"\r\n"
    if kind == 7:  # duplicate
        return piece + piece
    if kind == 8:  # random bytes in the middle
        return piece[:at] + src.bytes(src.int(1, 16)) + piece[at:]
    if kind == 9:  # spaces and tabs around the verb/argument
        return b" \t " + piece.replace(b" ", b"   ", 1)
    return piece.replace(b":", b": ", 1).replace(b"<", b"", 1)


def cut(src: Source, data: bytes) -> list[bytes]:
    """The script's bytes as TCP would deliver them: random segment boundaries."""
    if not data:
        return []
    mode = src.int(0, 9)
    if mode == 0 and len(data) <= 4000:
        return [data[i : i + 1] for i in range(len(data))]  # byte at a time
    if mode == 1:
        return [data]
    count = src.int(1, min(40, len(data)))
    points = sorted({src.int(1, len(data)) for _ in range(count)})
    chunks, last = [], 0
    for point in points:
        chunks.append(data[last:point])
        last = point
    if last < len(data):
        chunks.append(data[last:])
    return [c for c in chunks if c]


# --- failure capture ------------------------------------------------------------------------------


class LoggedFailures:
    """Every error-level Twisted log event (log.failure included) while active."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        level = event.get("log_level")
        if "log_failure" in event or (level is not None and level >= LogLevel.error):
            self.events.append(event)

    def __enter__(self) -> "LoggedFailures":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def describe(self) -> str:
        out = []
        for event in self.events:
            failure = event.get("log_failure")
            out.append(f"{event.get('log_format')}: {failure.getTraceback() if failure else ''}")
        return "\n".join(out)


class Finding(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Finding(message)


# --- SMTP -------------------------------------------------------------------------------------------

_SMTP_LINE = re.compile(rb"([2-5][0-9][0-9])([ -].*)?")


def check_smtp_output(output: bytes) -> int:
    """Lexical and continuation check of everything an SMTP session wrote; returns reply count."""
    if not output:
        return 0
    check(output.endswith(b"\r\n"), f"output ends inside a line: {output[-80:]!r}")
    lines = output[:-2].split(b"\r\n")
    open_code: bytes | None = None
    replies = 0
    for line in lines:
        match = _SMTP_LINE.fullmatch(line)
        check(match is not None, f"malformed SMTP reply line {line[:120]!r}")
        check(b"\n" not in line and b"\r" not in line, f"bare CR/LF inside a reply line {line[:120]!r}")
        code, rest = match.group(1), match.group(2) or b""
        if open_code is not None:
            check(code == open_code, f"continuation changed the code: {open_code!r} then {line[:80]!r}")
        if rest.startswith(b"-"):
            open_code = code
        else:
            open_code = None
            replies += 1
    check(open_code is None, "output ends inside a multi-line reply")
    return replies


def _account(src: Source, profile: Profile) -> Any:
    return src.choice(profile.accounts) if profile.accounts else None


def _address(src: Source, profile: Profile) -> bytes:
    account = _account(src, profile)
    options = [
        account.address if account else "user@example.com",
        "someone@elsewhere.example",
        "postmaster",
        f"postmaster@{profile.local_domains[0] if profile.local_domains else 'example.com'}",
        "../../etc/passwd@example.com",
        '"../x"@example.com',
        "a/b@example.com",
        "x" * 70 + "@example.com",
        "",
        "bad address",
        "用户@例子.公司",
    ]
    return src.choice(options).encode("utf-8")


def _auth_lines(src: Source, profile: Profile, verb: bytes = b"AUTH") -> list[bytes]:
    account = _account(src, profile)
    user = (account.address if account else "nobody@example.com").encode()
    secret = (account.secret if account and src.chance(70) else "wrong-secret").encode()
    mechanism = src.choice([b"PLAIN", b"LOGIN", b"CRAM-MD5", b"XOAUTH2", b"plain"])
    if mechanism.upper() == b"PLAIN":
        token = base64.b64encode(b"\0" + user + b"\0" + secret)
        if src.chance(50):
            return [verb + b" PLAIN " + token + b"\r\n"]
        return [verb + b" PLAIN\r\n", token + b"\r\n"]
    if mechanism == b"LOGIN":
        return [verb + b" LOGIN\r\n", base64.b64encode(user) + b"\r\n", base64.b64encode(secret) + b"\r\n"]
    if mechanism == b"CRAM-MD5":
        answer = src.choice([b"*", base64.b64encode(user + b" " + b"0" * 32), b"!!notbase64", b""])
        return [verb + b" CRAM-MD5\r\n", answer + b"\r\n"]
    return [verb + b" " + mechanism + b"\r\n"]


def _smtp_body(src: Source) -> bytes:
    lines = []
    for _ in range(src.int(0, 8)):
        lines.append(
            src.choice(
                [b"Subject: fuzz", b"", b".", b"..", b".hidden", b"text line", b"a\nbare LF", b"cr\ronly", b"\xff\xfe",
                 b"x" * src.int(0, 1200), b"\r\n.\r\n", b"MAIL FROM:<smuggled@example.com>"]
            )
        )  # fmt: skip
    body = b"\r\n".join(lines)
    return body + src.choice([b"\r\n.\r\n", b"\r\n.\r\n", b"\n.\n", b"\r\n.\n", b".\r\n", b""])


def smtp_script(src: Source, profile: Profile) -> list[bytes]:
    pieces: list[bytes] = []
    if src.chance(85):
        pieces.append(src.choice([b"EHLO client.example\r\n", b"HELO client.example\r\n", b"ehlo x\r\n", b"EHLO\r\n"]))
    for _ in range(src.int(0, 14)):
        kind = src.int(0, 21)
        if kind <= 3:
            piece = b"MAIL FROM:<" + _address(src, profile) + b">" + src.choice([b"", b" SIZE=100", b" BODY=8BITMIME", b" SMTPUTF8", b" SIZE=99999999999", b" RET=FULL ENVID=x", b" FOO=bar", b" AUTH=<>"]) + b"\r\n"  # fmt: skip
            pieces.append(piece)
        elif kind <= 7:
            pieces.append(b"RCPT TO:<" + _address(src, profile) + b">" + src.choice([b"", b" NOTIFY=NEVER", b" ORCPT=rfc822;x@y", b" NOTIFY=BAD"]) + b"\r\n")  # fmt: skip
        elif kind <= 9:
            pieces.append(b"DATA\r\n")
            pieces.append(_smtp_body(src))
        elif kind == 10:
            size = src.int(0, 40)
            last = src.chance(50)
            declared = size if src.chance(85) else src.int(0, 60)
            pieces.append(b"BDAT " + str(declared).encode() + (b" LAST" if last else b"") + b"\r\n" + src.bytes(size))
        elif kind == 11:
            pieces.extend(_auth_lines(src, profile))
        elif kind == 12:
            pieces.append(src.choice([b"RSET\r\n", b"NOOP\r\n", b"NOOP hello\r\n", b"RSET now\r\n"]))
        elif kind == 13:
            pieces.append(src.choice([b"VRFY alice\r\n", b"EXPN staff\r\n", b"VRFY\r\n", b"HELP\r\n", b"HELP MAIL\r\n", b"HELP nothing\r\n"]))  # fmt: skip
        elif kind == 14:
            pieces.append(src.choice([b"ETRN example.com\r\n", b"ETRN @elsewhere.example\r\n", b"ATRN\r\n", b"TURN\r\n", b"ETRN\r\n"]))  # fmt: skip
        elif kind == 15:
            pieces.append(src.choice([b"STARTTLS\r\n", b"STARTTLS now\r\n"]))
        elif kind == 16:
            pieces.append(src.choice([b"QUIT\r\n", b"QUIT now\r\n"]))
        elif kind == 17:
            pieces.append(src.bytes(src.int(1, 300)))
        elif kind == 18:
            pieces.append(src.choice([b"XYZZY\r\n", b"\r\n", b"\n", b"MAIL\r\n", b"RCPT\r\n", b"MAIL FROM:\r\n", b"HELO a b\r\n"]))  # fmt: skip
        else:
            pieces.append(mutate(src, src.choice(pieces) if pieces else b"NOOP\r\n"))
    for index in range(len(pieces)):
        if src.chance(10):
            pieces[index] = mutate(src, pieces[index])
    return pieces


@dataclass
class SMTPWatch:
    """Which replies the session chose (wrapped `reply`), to check the envelope against them."""

    keys: list[str] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)  # addresses a RCPT was accepted for
    envelope_id: int | None = None
    mail_oks_seen: int = 0

    def wrap(self, session: Any) -> None:
        original = session.reply

        def reply(key: str, **values: Any) -> None:
            self.keys.append(key)
            if key in ("rcpt_ok", "rcpt_relay_ok"):
                self.accepted.add(str(values.get("address", "")).lower())
            original(key, **values)

        session.reply = reply


def _smtp_invariants(h: Harness, watch: SMTPWatch) -> None:
    session: Any = h.session
    policies = h.profile.policies
    envelope = session.envelope
    if envelope is not None:
        if id(envelope) != watch.envelope_id:
            mail_oks = watch.keys.count("mail_ok")
            check(mail_oks > watch.mail_oks_seen, "a transaction began without a 250 to MAIL")
            watch.envelope_id, watch.mail_oks_seen = id(envelope), mail_oks
        for recipient in envelope.recipients:
            check(
                recipient in watch.accepted or (recipient.startswith("postmaster@") and "postmaster" in watch.accepted),
                f"recipient {recipient} in the envelope without a 250 to its RCPT",
            )
        held = sum(len(chunk) for chunk in envelope.chunks)
        check(held <= policies.max_message_size, f"holds {held} octets of message over the limit")
        check(not (envelope.too_big and envelope.chunks), "too-big message still holds data")
        check(len(set(envelope.recipients)) == len(envelope.recipients), "a recipient twice in one envelope")
        if policies.require_helo:
            check(session.helo is not None, "a transaction without HELO/EHLO")
    else:
        watch.envelope_id = None
    pending = len(session._pending) - session._pos
    limit = max(policies.max_command_line + 526, policies.max_auth_line) + 8
    if session._raw_handler is None and session._busy is None and not session._closed:
        check(pending <= limit, f"holds {pending} octets of an unfinished command line")
    check(pending <= MAX_HELD_INPUT + 65536 or session._busy is None, "held input unbounded")


def _stored_ids(root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    boxes = root / "mailboxes"
    if boxes.exists():
        for box in boxes.iterdir():
            for sub in ("new", "cur"):
                if (box / sub).is_dir():
                    for entry in (box / sub).iterdir():
                        found.setdefault(entry.name.split(":2,")[0], set()).add(box.name)
    return found


def run_smtp_session(src: Source, root: Path, persona: str | None = None) -> int:
    """One fuzzed SMTP session; returns the number of script lines fed. Raises Finding."""
    profile = profile_named(persona or src.choice(PERSONAS))
    events: list[Any] = []
    with LoggedFailures() as failures:
        h = Harness(SMTPSession, root, profile, clock=Clock())
        watch = SMTPWatch()
        watch.wrap(h.session)
        unsubscribe = h.events.subscribe(events.append)
        greeting = b"\r\n".join(line.encode("utf-8", "surrogateescape") for line in h.greeting) + b"\r\n"
        output = bytearray(greeting)
        script = smtp_script(src, profile)
        data = b"".join(script)
        for chunk in cut(src, data):
            h.session.dataReceived(chunk)
            h.settle()  # a failed login's delay passes on the fake clock
            output += h.transport.value()
            h.transport.clear()
            _smtp_invariants(h, watch)
        h.session.connectionLost(None)
        output += h.transport.value()
        unsubscribe()
    check(not failures.events, f"logged failure:\n{failures.describe()}")
    check_smtp_output(bytes(output))
    accepted = [e for e in events if e.kind == "message accepted"]
    accepted_ids = {e.fields["id"] for e in accepted}
    check(len(accepted_ids) == len(accepted), "one message id acknowledged twice")
    data_ok = h.profile.smtp("data_ok", id="x", queue_id="X", number=1, size=1)[-1][:3].encode()
    stored = _stored_ids(root)
    known = {a.address for a in profile.accounts} | {f"postmaster@{d}" for d in profile.local_domains}
    known.add(f"postmaster@{profile.hostname}")
    for uid, boxes in stored.items():
        check(boxes <= known, f"message stored in unknown mailboxes {boxes}")
    queue = root / "queue"
    queued = sorted(queue.glob("*.json")) if queue.exists() else []
    check(set(stored) <= accepted_ids, f"stored messages never acknowledged: {set(stored) - accepted_ids}")
    for identifier in accepted_ids:
        check(identifier in stored or (queue / f"{identifier}.json").exists() or bool(queued), f"acknowledged message {identifier} not in the store")
    check(len(queued) <= len(accepted), "more queued messages than acknowledged ones")
    check(data_ok == b"250", "data_ok is not a 250 reply")
    if queued and profile.policies.relay != "open":
        authenticated = any(e.kind == "authenticated" for e in events)
        for path in queued:
            record = json.loads(path.read_text())
            domains = {r.rpartition("@")[2].lower() for r in record["recipients"]}
            check(authenticated or domains <= set(profile.relay_domains), f"relayed without authentication: {record['recipients']}")
    return data.count(b"\n") + 1


# --- POP3 -------------------------------------------------------------------------------------------



def _pop3_messages(src: Source) -> list[bytes]:
    bodies = [
        b"Subject: one\r\n\r\nhello\r\n",
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n",
        b"Subject: no final newline\r\n\r\nlast line",
        b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n",
        b".starts with a dot\r\n\r\nbody\r\n",
        b"Subject: empty body\r\n\r\n",
    ]
    return [src.choice(bodies) for _ in range(src.int(0, 5))]


def pop3_script(src: Source, profile: Profile, account: Any, greeting: str) -> list[bytes]:
    pieces: list[bytes] = []
    user = account.address.encode()
    secret = account.secret.encode()
    stamp = re.search(r"<[^>]*>", greeting)
    if src.chance(80):
        way = src.int(0, 3)
        if way <= 1:
            pieces += [b"USER " + user + b"\r\n", b"PASS " + (secret if src.chance(85) else b"nope") + b"\r\n"]
        elif way == 2 and stamp:
            digest = hashlib.md5(stamp.group(0).encode() + secret).hexdigest().encode()
            pieces.append(b"APOP " + user + b" " + (digest if src.chance(85) else b"0" * 32) + b"\r\n")
        else:
            pieces += _auth_lines(src, profile)
    for _ in range(src.int(0, 16)):
        kind = src.int(0, 16)
        number = src.choice([b"1", b"2", b"3", b"0", b"-1", b"99999999999", b"x", b"", b"1 2", b"01"])
        if kind <= 1:
            pieces.append(b"RETR " + number + b"\r\n")
        elif kind == 2:
            pieces.append(b"TOP " + number + b" " + src.choice([b"0", b"1", b"10", b"x", b""]) + b"\r\n")
        elif kind <= 4:
            pieces.append(src.choice([b"LIST", b"UIDL"]) + (b" " + number if src.chance(50) else b"") + b"\r\n")
        elif kind <= 6:
            pieces.append(b"DELE " + number + b"\r\n")
        elif kind == 7:
            pieces.append(src.choice([b"STAT\r\n", b"NOOP\r\n", b"RSET\r\n", b"CAPA\r\n", b"STAT x\r\n", b"AUTH\r\n"]))
        elif kind == 8:
            pieces.append(src.choice([b"USER " + user + b"\r\n", b"PASS x\r\n", b"USER\r\n", b"PASS\r\n", b"APOP a b\r\n"]))
        elif kind == 9:
            pieces.extend(_auth_lines(src, profile))
        elif kind == 10:
            pieces.append(src.bytes(src.int(1, 200)))
        elif kind == 11:
            pieces.append(src.choice([b"XTND\r\n", b"\r\n", b"\n", b"list\n", b"retr 1\r\n", b"\tSTAT \r\n"]))
        elif kind == 12 and src.chance(30):
            pieces.append(b"QUIT\r\n")
        else:
            pieces.append(mutate(src, src.choice(pieces) if pieces else b"NOOP\r\n"))
    for index in range(len(pieces)):
        if src.chance(8):
            pieces[index] = mutate(src, pieces[index])
    if src.chance(60):
        pieces.append(b"QUIT\r\n")
    return pieces


@dataclass
class Pop3Model:
    """Walks the script's bytes with the server's framing and the output with the reply grammar."""

    profile: Profile
    output: bytes
    pos: int = 0
    state: str = "AUTHORIZATION"
    exchange: bool = False
    deleted: set[int] = field(default_factory=set)
    retrieved: set[int] = field(default_factory=set)
    quit_update: bool = False
    ended: bool = False
    closed: bool = False

    def read_line(self) -> bytes | None:
        end = self.output.find(b"\r\n", self.pos)
        if end < 0:
            check(self.pos == len(self.output), f"output ends inside a line: {self.output[self.pos:][:80]!r}")
            return None
        line = self.output[self.pos : end]
        self.pos = end + 2
        return line

    def status(self) -> bytes | None:
        line = self.read_line()
        if line is None:
            check(self.closed, "a command line got no reply and the session is still open")
            return None
        check(
            line == b"+OK" or line.startswith((b"+OK ", b"-ERR")) or line == b"+" or line.startswith(b"+ "),
            f"malformed POP3 status line {line[:120]!r}",
        )
        return line

    def body(self, what: str) -> None:
        while True:
            line = self.read_line()
            check(line is not None, f"multi-line {what} reply not terminated by '.'")
            assert line is not None
            if line == b".":
                return
            check(not line.startswith(b".") or line.startswith(b".."), f"{what} line not dot-stuffed: {line[:80]!r}")
            check(b"\n" not in line and b"\r" not in line, f"bare CR/LF inside {what} body line")

    def limit(self) -> int:
        policies = self.profile.policies
        return policies.max_auth_line if self.exchange else policies.max_pop3_line

    def lines(self, data: bytes) -> list[tuple[str, bytes]]:
        """Frame like LineSession: ('line', bytes) or ('long', b'') per LF-terminated line."""
        out = []
        pos = 0
        while True:
            newline = data.find(b"\n", pos)
            if newline < 0:
                return out
            end = newline
            while end > pos and data[end - 1] in (13, 0):
                end -= 1
            out.append((data[pos:end], newline - pos))
            pos = newline + 1

    def expect(self, raw: bytes, raw_length: int) -> bool:
        """Consume the reply to one framed line; False when the session has ended."""
        limit = self.limit()
        if len(raw) + 2 > limit or raw_length > limit:
            reply = self.status()
            if reply is None:
                return False
            check(reply.startswith(b"-ERR"), f"overlong line answered {reply[:80]!r}")
            self.exchange = False
            return True
        if self.exchange:
            reply = self.status()
            if reply is None:
                return False
            self.exchange = reply == b"+" or reply.startswith(b"+ ")
            check(self.exchange or reply.startswith((b"+OK", b"-ERR")), f"bad end of a SASL exchange {reply[:80]!r}")
            self._maybe_logged_in(reply)
            return True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        reply = self.status()
        if reply is None:
            return False
        if text is None or "\0" in text:
            check(reply.startswith(b"-ERR"), f"bad bytes answered {reply[:80]!r}")
            return True
        verb, _, argument = text.strip().partition(" ")
        verb, argument = verb.upper(), argument.strip()
        if verb == "QUIT" and self.state != "UPDATE" and not reply.startswith((b"+ ", b"+\r")) and reply != b"+":
            self.quit_update = self.state == "TRANSACTION" and reply.startswith(b"+OK")
            self.ended = True
            return False
        if reply.startswith(b"+OK"):
            if verb in ("LIST", "UIDL") and not argument or verb in ("RETR", "TOP", "CAPA") or (verb == "AUTH" and not argument):
                self.body(verb)
            if verb == "DELE":
                self.deleted.add(int(argument))
            if verb == "RSET":
                self.deleted.clear()
            if verb == "RETR":
                self.retrieved.add(int(argument))
            self._maybe_logged_in(reply, verb)
        elif reply == b"+" or reply.startswith(b"+ "):
            check(verb == "AUTH" and bool(argument), f"SASL continuation after {verb!r}")
            self.exchange = True
        return True

    def _maybe_logged_in(self, reply: bytes, verb: str = "AUTH") -> None:
        if reply.startswith(b"+OK") and verb in ("PASS", "APOP", "AUTH") and self.state == "AUTHORIZATION":
            self.state = "TRANSACTION"


def run_pop3_session(src: Source, root: Path, persona: str | None = None) -> int:
    profile = profile_named(persona or src.choice(PERSONAS))
    account = src.choice(profile.accounts)
    with LoggedFailures() as failures:
        h = Harness(POP3Session, root, profile, clock=Clock())
        for content in _pop3_messages(src):
            h.store.deliver([account.address], content)
        before = [m.uid for m in h.store.messages(account.address)]
        greeting = h.greeting
        check(len(greeting) == 1 and greeting[0].startswith("+OK"), f"bad greeting {greeting}")
        script = pop3_script(src, profile, account, greeting[0])
        data = b"".join(script)
        chunks = cut(src, data)
        step = max(1, len(chunks) // 20)
        for index, chunk in enumerate(chunks):
            h.session.dataReceived(chunk)
            h.settle()  # a failed login's delay passes on the fake clock
            if not h.closed and index % step == 0:
                now = [m.uid for m in h.store.messages(account.address)]
                check(now == before, "a message vanished before QUIT")
        output = h.transport.value()
        closed = h.closed
        h.session.connectionLost(None)
    check(not failures.events, f"logged failure:\n{failures.describe()}")
    model = Pop3Model(profile, output, closed=closed)
    for raw, raw_length in model.lines(data):
        if not model.expect(raw, raw_length):
            break
    check(model.pos == len(output), f"output left over: {output[model.pos:][:200]!r}")
    after = [m.uid for m in h.store.messages(account.address)]
    if model.quit_update:
        doomed = set(model.deleted)
        if profile.policies.expire_days == 0:
            doomed |= model.retrieved
        expected = [uid for n, uid in enumerate(before, start=1) if n not in doomed]
        check(after == expected, f"QUIT removed {set(before) - set(after)}, expected {sorted(doomed)}")
    else:
        check(after == before, "messages removed without a QUIT in TRANSACTION")
    check(h.store.try_lock(account.address), "maildrop lock still held after the session ended")
    return data.count(b"\n") + 1


# --- pytest -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_disk():
    """The fuzz checks protocol logic, not durability: skip fsync (tests/test_store.py covers it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        yield


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_counter = iter(range(10**9))


def _fresh(scratch: Path) -> Path:
    path = scratch / f"s{next(_counter)}"
    path.mkdir()
    return path


FUZZ = settings(
    max_examples=int(os.environ.get("MAILLAB_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("MAILLAB_FUZZ_RANDOM") is None,
)


@FUZZ
@given(st.data())
def test_fuzz_smtp_sessions(fast_disk, scratch, data):
    root = _fresh(scratch)
    try:
        run_smtp_session(DrawSource(data), root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@FUZZ
@given(st.data())
def test_fuzz_pop3_sessions(fast_disk, scratch, data):
    root = _fresh(scratch)
    try:
        run_pop3_session(DrawSource(data), root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_split_invariance_of_smtp_replies(fast_disk, scratch):
    """The same script gives the same reply codes whatever the TCP boundaries (STARTTLS aside)."""
    for seed in range(40):
        src = RandomSource(seed)
        profile = profile_named("rfc")
        script = [p for p in smtp_script(src, profile) if b"STARTTLS" not in p.upper()]
        data = b"".join(script)
        codes = []
        for way in range(3):
            root = _fresh(scratch)
            h = Harness(SMTPSession, root, profile, clock=Clock())
            chunks = [data] if way == 0 else [data[i : i + 1] for i in range(len(data))] if way == 1 else cut(RandomSource(seed + 1000), data)
            for chunk in chunks:
                h.session.dataReceived(chunk)
                h.settle()  # a failed login's delay passes on the fake clock
            out = h.transport.value()
            codes.append([line[:4] for line in out.split(b"\r\n") if line])
            h.session.connectionLost(None)
            shutil.rmtree(root, ignore_errors=True)
        assert codes[0] == codes[1] == codes[2], (seed, data[:400])


def campaign(total_lines: int, seed: int = 1, report: Callable[[str], None] = print) -> tuple[int, float]:
    """Plain-PRNG sessions (both protocols, every persona) until `total_lines` lines were fed."""
    root_dir = Path(tempfile.mkdtemp(prefix="maillab-fuzz-"))
    lines = sessions = 0
    start = time.perf_counter()
    try:
        while lines < total_lines:
            session_seed = seed * 10**9 + sessions
            root = root_dir / f"s{sessions}"
            root.mkdir()
            try:
                runner = run_smtp_session if sessions % 2 == 0 else run_pop3_session
                lines += runner(RandomSource(session_seed), root)
            except Exception as error:
                raise AssertionError(f"session seed {session_seed} ({runner.__name__}): {error}") from error
            finally:
                shutil.rmtree(root, ignore_errors=True)
            sessions += 1
            if sessions % 5000 == 0:
                elapsed = time.perf_counter() - start
                report(f"  {sessions} sessions, {lines} lines, {lines / elapsed:.0f} lines/s")
    finally:
        shutil.rmtree(root_dir, ignore_errors=True)
    elapsed = time.perf_counter() - start
    report(f"fuzz campaign: {sessions} sessions, {lines} lines in {elapsed:.0f} s = {lines / elapsed:.0f} lines/s, 0 findings")
    return lines, elapsed


def test_campaign_smoke(fast_disk):
    """A few hundred PRNG sessions: the long campaign's code path stays healthy in CI."""
    lines, _ = campaign(3000, seed=7, report=lambda text: None)
    assert lines >= 3000


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_long_fuzz_campaign(fast_disk, capsys):
    """At least 1,000,000 command lines through both protocols (MAILLAB_FUZZ_LINES to change)."""
    total = int(os.environ.get("MAILLAB_FUZZ_LINES", "1000000"))
    with capsys.disabled():
        lines, elapsed = campaign(total, seed=int(os.environ.get("MAILLAB_FUZZ_SEED", "1")))
    assert lines >= total
