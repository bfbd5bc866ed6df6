"""The SMTP server: an I/O adapter around the protocol core (`mailprotocol.smtp`).

The core decides every command's reply and state; this session frames lines, runs fault scripts,
streams message data (CRLF.CRLF scanning, BDAT chunks, SIZE without holding more than the limit),
and carries out the core's effects: TLS, greylisting and failure counters (server-wide memory),
queue counts for ETRN/ATRN, delivery to the store, events. Reply texts come from the profile.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol

from mailprotocol import smtp as core
from mailprotocol.decision import AUTH_FAILED, START_TLS, Decision, Effect, replace

from . import auth
from .arrival import Arrival, Verdict
from .masking import mask_line
from mailprotocol.parameters import unstuff
from .rendering import render_smtp
from .session import LineSession, ServerContext, log
from .store import QuotaExceeded, StoreError

#: Command grammar, for HELP and for learners (the core's verb table).
SYNTAX = {verb.name: verb.grammar for verb in core.VERBS}


#: A "." at the start of a line followed by a line break (its CR, if any, in group 1). The pattern
#: starts with a literal, so `re` finds candidates at memchr speed; a look-behind or an alternation
#: in front would make it try every octet of the message (35 ms per MB, most of a 1 MB delivery).
_DOT_LINE = re.compile(rb"\n\.(\r?)(?=\n)")


def has_bare_lf_dot(data: bytes, pos: int = 0) -> bool:
    """A "." line from `pos` on where a line break is a bare LF: it looks like the end of DATA but
    is not (only CRLF.CRLF ends a message, RFC 5321 4.1.1.4). The octet before `pos` counts as
    the line break before the dot, as in the stream it came from."""
    for match in _DOT_LINE.finditer(data, pos):
        start = match.start()
        if not match.group(1) or start == 0 or data[start - 1] != 0x0D:
            return True
    return False


class _AlreadyAnswered(Exception):
    """A check refused the message and its reply was sent: nothing more to say."""


#: Chunks shorter than this are copied into the envelope's gathering buffer ...
_GATHER_BELOW = 4096
#: ... which becomes one piece when it reaches this size.
_GATHERED_PIECE = 64 * 1024


@dataclass
class Envelope:
    """The transaction in progress as the server holds it: the core's envelope and the data so far."""

    core: core.Envelope
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    too_big: bool = False
    tail: bytearray = field(default_factory=bytearray)  # small pieces gathered into one buffer

    def add(self, chunk: bytes) -> None:
        """Keep `chunk`; small ones are gathered, so a client sending one byte per packet costs
        about one byte per byte, not a Python object (~40 bytes) per byte."""
        if len(chunk) >= _GATHER_BELOW:
            if self.tail:
                self.chunks.append(bytes(self.tail))
                self.tail = bytearray()
            self.chunks.append(chunk)
            return
        self.tail += chunk
        if len(self.tail) >= _GATHERED_PIECE:
            self.chunks.append(bytes(self.tail))
            self.tail = bytearray()

    def parts(self) -> list[bytes]:
        """The data so far, in order."""
        return [*self.chunks, bytes(self.tail)] if self.tail else self.chunks

    def discard(self) -> None:
        self.chunks.clear()
        self.tail = bytearray()

    def take(self) -> bytes:
        """All the data in one piece; the envelope keeps nothing (the message is held once)."""
        content = b"".join(self.parts())
        self.discard()
        return content

    @property
    def sender(self) -> str:
        return self.core.sender

    @property
    def params(self) -> Any:
        return self.core.params

    @property
    def local(self) -> tuple[str, ...]:
        return self.core.local

    @property
    def relay(self) -> tuple[str, ...]:
        return self.core.relay

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.core.recipients


class SMTPSession(LineSession):
    """One SMTP conversation: `state` is the core's state, `envelope` the transaction's data."""

    protocol_name = "SMTP"

    def __init__(self, context: ServerContext) -> None:
        super().__init__(context)
        self.state = core.SMTPState()
        self.envelope: Envelope | None = None
        self._data_held = b""
        self._data_skip = 0
        self._bare_lf_noted = False
        self._chunk: Effect | None = None
        self._bdat_remaining = 0
        self.client_name: str | None = None  # the client's confirmed host name, when looked up
        self._naming: defer.Deferred | None = None  # the look-up under way (client_namer)

    @property
    def helo(self) -> str | None:
        return self.state.helo

    @property
    def esmtp(self) -> bool:
        return self.state.esmtp

    @property
    def authenticated_as(self) -> str | None:
        return self.state.authenticated_as

    # --- LineSession hooks -------------------------------------------------------------------

    def line_limit_for(self, start: bytes) -> int:
        return core.line_limit_for(self.state, self.profile, start)

    def idle_timeout(self) -> float:
        return self.profile.policies.smtp_idle_timeout

    def session_started(self) -> None:
        self.state = replace(self.state, tls=self.tls_active, tls_available=self.context.tls_options is not None)
        self._start_naming()
        self.carry_out(core.greeting(self.state))

    def timed_out(self) -> None:
        self.reply("timeout")

    def line_too_long(self) -> None:
        self.record_client("<line over the limit, discarded>")
        self.answering = ""
        self.carry_out(core.line_too_long(self.state))

    def internal_error(self) -> None:
        self.state = replace(self.state, envelope=None, exchange=None)
        self.envelope = None
        self._raw_handler = None
        self.reply("storage_failed")

    def reply(self, key: str, **values: Any) -> list[str]:
        """Send one reply; its lines, whose code says whether the command succeeded."""
        values = {**self.common_values(), **values}
        if key == "ehlo":
            lines = self.profile.ehlo_reply(self.state.tls, **values)
        else:
            lines = self.profile.smtp(key, **values)
        self.send_lines(lines)
        if key in self.profile.smtp_close_after or lines[-1].startswith("421"):
            self.close()  # 421 always closes (RFC 5321 3.8); a persona may close after others
        return lines

    def render_fault(self, lines: tuple[str, ...]) -> list[str]:
        return render_smtp(lines, self.profile.values(**self.common_values()))

    # --- lines in, decisions out -------------------------------------------------------------

    def line_received(self, line: bytes) -> defer.Deferred | None:
        self.answering = "AUTH" if self.state.exchange is not None else ""
        if self.state.exchange is not None:
            text = line.decode("utf-8", "replace")
            self.record_client(mask_line(text, in_sasl_exchange=True), text)
            return self.carry_out(core.auth_line(self.state, self.profile, line.decode("ascii", "replace")))
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.record_client(line.decode("utf-8", "replace"))
            return self.carry_out(core.bad_characters(self.state))
        self.record_client(mask_line(text), text)
        parsed = core.parse(self.state, self.profile, text)
        if isinstance(parsed, Decision):
            return self.carry_out(parsed)
        action = self.fault(parsed.verb, parsed.argument)
        if action is not None:
            return self.run_fault(action, lambda: self.dispatch(parsed))
        return self.dispatch(parsed)

    def dispatch(self, command: core.Command) -> defer.Deferred | None:
        self.answering = command.verb
        if command.verb == "AUTH":  # what the server remembers, and a fresh CRAM-MD5 challenge (RFC 2195)
            if self.auth_locked_out():
                return self._carry_out(core.locked_out(self.state))
            failures = self.persona_auth_failures()
            challenge = auth.new_challenge(self.profile.hostname)
            self.state = replace(self.state, auth_failures=failures, challenge=challenge)
        return self.carry_out(core.dispatch(self.state, self.profile, command))

    def carry_out(self, decision: core.SMTPDecision) -> defer.Deferred | None:
        """Throttle logins (server-wide limits), then do what the core decided (`_carry_out`)."""
        failed = decision.effect(AUTH_FAILED)
        if (failed is not None or decision.has(core.AUTHENTICATED)) and self.auth_locked_out():
            # Locked while the exchange went on: the outcome is never told, nor a login completed.
            return self._carry_out(core.locked_out(self.state))
        if failed is not None:
            pause = self.auth_failure_pause(failed["user"])
            if pause is not None:
                return pause.addCallback(lambda _: None if self._closed else self._carry_out(decision))
        return self._carry_out(decision)

    def _carry_out(self, decision: core.SMTPDecision) -> defer.Deferred | None:
        """Adopt the decision's state, do what only a server can do, send the replies."""
        check = decision.effect(core.RECIPIENT_CHECK)
        if check is not None and self.profile.policies.greylist_delay:
            wait = self.context.limits.greylisted(
                self.client_ip, check["sender"], check["address"], self.context.now(), self.profile.policies.greylist_delay
            )
            if wait > 0:
                decision = core.greylisted(decision, wait)
        check = decision.effect(core.RECIPIENT_CHECK)
        if check is not None and self._mailbox_full(check["address"]):
            decision = core.mailbox_full(decision, self.profile.policies.quota_full_tempfail)
        self._adopt(decision.state)
        for effect in decision.effects:
            if effect.kind == core.EVENT:
                fields = {k: v for k, v in effect.values.items() if k not in ("kind", "detail")}
                self.event(effect["kind"], effect["detail"], **fields)
        query = decision.effect(core.QUEUE_COUNT)
        if query is not None:
            return self._count_queue(query)
        chunk = decision.effect(core.READ_CHUNK)
        if chunk is not None:
            self._read_chunk(chunk)
            return None
        failed = decision.effect(AUTH_FAILED)
        if failed is not None:
            self._auth_failure_logged(failed)
        authenticated = decision.effect(core.AUTHENTICATED)
        if authenticated is not None:  # the event comes before the 235: graders attribute the session by it
            self.context.limits.auth_succeeded(self.client_ip, authenticated["address"])
            self.event("authenticated", authenticated["address"], user=authenticated["address"])
        lines: list[str] = []
        for reply in decision.replies:
            lines = self.reply(reply.key, **reply.values)
        self._track_faults(decision, lines)
        if decision.has(START_TLS):
            # Input pipelined after STARTTLS belongs to the plain-text session: discard it (RFC 3207 5).
            self._pending, self._pos = b"", 0
            self.transport.startTLS(self.context.tls_options)
            self.tls_active = True
            self.event("tls", "TLS started", certificate=self.context.tls_subject)
        if decision.has(core.START_DATA):
            self._data_held = b"\r\n"  # the CRLF that ended the DATA line: a '.' line may follow at once
            self._data_skip = 2
            self._bare_lf_noted = False
            self._raw_handler = self._data_received
        if failed is not None:
            self._auth_failed(failed)
        if decision.has(core.CLOSE):
            self.close()
        return None

    def _track_faults(self, decision: core.SMTPDecision, lines: list[str]) -> None:
        """Tell the fault tracker the answer as the client sees it (its code), as the validator does."""
        tracker = self.fault_tracker
        if not tracker.script.rules or not lines:  # nothing to count for (most servers)
            return
        recipient = decision.effect(core.RECIPIENT_CHECK)  # still there: neither greylisted nor over quota
        tracker.answered(
            self.answering, lines[-1][:1] == "2", account=self.state.authenticated_as,
            recipient=recipient["key"] if recipient is not None else None,
        )

    def _mailbox_full(self, address: str) -> bool:
        """A local account's mailbox already at its quota (usage is counted once, then kept)."""
        account = self.profile.find_account(address)
        return account is not None and self.context.store.over_quota(account.address)

    def _adopt(self, state: core.SMTPState) -> None:
        """The core's state; the transaction's data follows its envelope."""
        self.state = state
        if state.envelope is None:
            self.envelope = None
        elif self.envelope is None:
            self.envelope = Envelope(state.envelope)
        else:
            self.envelope.core = state.envelope

    def _auth_failure_logged(self, failed: Effect) -> None:
        """The refusal's reason in the log, before the reply says no (as for a success)."""
        user = failed["user"]
        self.event("authentication failed", f"{user}: {failed['reason']}", user=user)

    def _auth_failed(self, failed: Effect) -> None:
        """After the refusal: the persona's limit on failures from one client."""
        failures = self.persona_auth_failures()  # recorded by `auth_failure_pause`
        verdict = core.too_many_failures(self.state, self.profile, failures)
        if verdict is not None:
            self.event("too many authentication failures", f"{failures} from {self.client_ip}")
            for reply in verdict.replies:
                self.reply(reply.key, **reply.values)

    def _count_queue(self, query: Effect) -> defer.Deferred | None:
        store = self.context.store
        if query["verb"] == "ATRN":  # a few domains, counted in the reactor thread as before
            count = sum(store.queued_count(domain) for domain in query["domains"])
            self.carry_out(core.queue_answer(self.state, query, count))
            return None
        d = self.context.run_blocking(store.queued_count, query["domains"][0])
        return d.addCallback(lambda count: self.carry_out(core.queue_answer(self.state, query, count)))

    # --- message data ------------------------------------------------------------------------

    def _data_received(self, data: bytes, pos: int) -> int:
        """Scan for CRLF.CRLF without splitting lines: bare LF never ends a message.

        `_data_held` keeps the last 4 octets of the previous chunk, where a terminator split across
        two TCP segments may begin; everything else is committed without copying twice.
        """
        held = self._data_held
        if not self._bare_lf_noted and (has_bare_lf_dot(data, pos) or has_bare_lf_dot(held + data[pos : pos + 4])):
            # A terminal that sends bare LF (telnet in line mode, nc without -C) never ends DATA:
            # say why the server still waits (RFC 5321 4.1.1.4: the end is CRLF.CRLF).
            self._bare_lf_noted = True
            self.event("waiting for CRLF.CRLF", "a '.' line ended with a bare LF, which does not end the message")
        if held:
            head = held + data[pos : pos + 4]
            boundary = head.find(b"\r\n.\r\n")
            if 0 <= boundary < len(held):
                self._commit(held[: boundary + 2])
                return self._end_of_data(pos + boundary + 5 - len(held))
            if len(data) - pos < 4:
                # Too few new octets to rule out a terminator starting in the held tail: keep 4.
                combined = held + data[pos:]
                self._commit(combined[:-4])
                self._data_held = combined[-4:]
                return len(data)
            self._commit(held)
            self._data_held = b""
        end = data.find(b"\r\n.\r\n", pos)
        if end >= 0:
            self._commit(data[pos : end + 2])
            return self._end_of_data(end + 5)
        keep = max(pos, len(data) - 4)
        self._commit(data[pos:keep])
        self._data_held = data[keep:]
        return len(data)

    def _end_of_data(self, position: int) -> int:
        self._data_held = b""
        self._raw_handler = None
        self.record_message()
        self.record_client(".")
        self.wait_for(self._finish_message(dot_stuffed=True))
        return position

    def record_message(self, limit: int = 100) -> None:
        """Put the message's first lines in the transcript: reviewers and the TUI show them."""
        if (self.transcript is None and not self.context.events.wants_lines) or self.envelope is None:
            return
        head: list[bytes] = []
        taken = 0
        for chunk in self.envelope.parts():
            head.append(chunk[: 16 * 1024 - taken])
            taken += len(head[-1])
            if taken >= 16 * 1024:
                break
        content = b"".join(head)
        lines = content.decode("utf-8", "replace").split("\r\n")
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines[:limit]:
            self.record_client(line)
        if len(lines) > limit or self.envelope.size > len(content):
            self.record_client(f"<... {self.envelope.size} octets in all>")

    def _commit(self, chunk: bytes) -> None:
        if self._data_skip:
            chunk, self._data_skip = chunk[self._data_skip :], max(0, self._data_skip - len(chunk))
        if not chunk or self.envelope is None:
            return
        envelope = self.envelope
        envelope.size += len(chunk)
        if envelope.too_big:
            return
        if envelope.size > self.profile.policies.max_message_size:
            envelope.too_big = True
            envelope.discard()  # never hold more than the limit
            return
        envelope.add(chunk)

    def _read_chunk(self, chunk: Effect) -> None:
        """BDAT: the chunk is read even when the command is refused (RFC 3030 3)."""
        self._chunk = chunk
        self._bdat_remaining = chunk["size"]
        self._raw_handler = self._bdat_received
        if chunk["size"] == 0:
            self._raw_handler = None
            self._bdat_done()

    def _bdat_received(self, data: bytes, pos: int) -> int:
        take = min(self._bdat_remaining, len(data) - pos)
        if self._chunk is not None and self._chunk["error"] is None:
            self._commit(data[pos : pos + take])
        self._bdat_remaining -= take
        if self._bdat_remaining == 0:
            self._raw_handler = None
            self._bdat_done()
        return pos + take

    def _bdat_done(self) -> None:
        chunk = self._chunk
        assert chunk is not None
        self.record_client(f"<BDAT chunk{' LAST' if chunk['last'] else ''}>")
        envelope = self.envelope
        decision = core.chunk_done(self.state, chunk, bool(envelope and envelope.too_big), envelope.size if envelope else 0)
        self.carry_out(decision)
        if chunk["error"] is None and not decision.replies:
            self.wait_for(self._finish_message(dot_stuffed=False))

    def _finish_message(self, dot_stuffed: bool) -> defer.Deferred:
        """The core answers the complete message (size, 8-bit data); a fault script may step in."""
        envelope = self.envelope
        assert envelope is not None
        content = envelope.take()  # nothing when over the limit: the data was never held
        if dot_stuffed:
            content = unstuff(content)
        decision = core.end_of_message(self.state, self.profile, envelope.size, len(content), not content.isascii())
        self._adopt(decision.state)
        if decision.reason == "size-exceeded":
            self.event("message refused", f"{envelope.size} octets over the {self.profile.policies.max_message_size} limit")
            self.reply(decision.replies[0].key, **decision.replies[0].values)
            return defer.succeed(None)
        action = self.fault("DATA-END")
        if action is not None:
            return defer.maybeDeferred(self.run_fault, action, lambda: self._deliver(envelope, content, decision))
        return self._deliver(envelope, content, decision)

    def _start_naming(self) -> None:
        """Look the client's name up at connect, as Postfix's smtpd does, so it is known by DATA."""
        namer = self.context.client_namer
        if namer is None or self.client_ip in LOOPBACK_NAMES:
            return
        self._naming = namer(self.client_ip)
        self._naming.addCallbacks(self._named, self._naming_failed)

    def _named(self, name: str | None) -> None:
        self.client_name = name

    def _naming_failed(self, failure: Any) -> None:
        log.failure("naming the client failed", failure)

    def _after_naming(self, naming: defer.Deferred) -> defer.Deferred:
        """Fires once the client's name look-up is over (its own result stays with it)."""
        waiting: defer.Deferred = defer.Deferred()

        def done(result: Any) -> Any:
            waiting.callback(None)
            return result

        naming.addBoth(done)
        return waiting

    def _deliver(self, envelope: Envelope, content: bytes, decision: core.SMTPDecision) -> defer.Deferred:
        reply_key = decision.replies[0].key
        if decision.reason == "undeclared-8bit":
            self.event("message refused", "8-bit data without BODY=8BITMIME")
            self.reply(reply_key)
            return defer.succeed(None)
        if self._naming is not None and not self._naming.called:
            d = self._after_naming(self._naming)
            d.addCallback(lambda _: self._check_and_store(envelope, content, reply_key))
            return d
        return self._check_and_store(envelope, content, reply_key)

    def _check_and_store(self, envelope: Envelope, content: bytes, reply_key: str) -> defer.Deferred:
        check = self.context.message_check
        queue_id = new_queue_id()
        if check is None:
            d = self.context.run_blocking(self._store, envelope, self.trace_headers(envelope, queue_id) + content)
        else:
            # A world's MX checks the sender (SPF, DKIM, DMARC) off the reactor: it asks DNS.
            arrival = Arrival(self.client_ip, self.helo or "", envelope.sender, tuple(envelope.recipients), content)
            d = self.context.run_blocking(check, arrival)
            d.addCallback(self._checked, envelope, content, queue_id)
        d.addCallbacks(self._stored, self._store_failed, callbackArgs=(envelope, len(content), queue_id, reply_key))
        return d

    def _checked(self, verdict: Verdict, envelope: Envelope, content: bytes, queue_id: str) -> Any:
        """Store with the check's headers, or refuse with the persona's reply for that failure."""
        if verdict.reject is not None:
            key, values = verdict.reject
            self.event("message refused", verdict.reason or key)
            self.reply(key, **values)
            raise _AlreadyAnswered()
        message = self.trace_headers(envelope, queue_id) + verdict.headers + content
        return self.context.run_blocking(self._store, envelope, message)

    def _store(self, envelope: Envelope, message: bytes) -> str:
        store = self.context.store
        message_id = ""
        if envelope.local:
            message_id = store.deliver(envelope.local, message)
        if envelope.relay:
            relay_id = store.queue_outbound(envelope.sender, envelope.relay, message)
            message_id = message_id or relay_id
        return message_id

    def _stored(self, message_id: str, envelope: Envelope, size: int, queue_id: str, reply_key: str = "data_ok") -> None:
        self.event(
            "message accepted",
            f"{envelope.sender or '<>'} -> {', '.join(envelope.recipients)} ({size} octets, id {queue_id})",
            sender=envelope.sender,
            recipients=envelope.recipients,
            size=size,
            id=message_id,
        )
        self.reply(reply_key, id=message_id, queue_id=queue_id, number=int(queue_id[:8], 16), size=size)

    def _store_failed(self, failure: Any, *_: Any) -> None:
        if failure.check(_AlreadyAnswered):
            return None
        error = failure.check(StoreError, OSError)
        if error is None:
            return failure
        if failure.check(QuotaExceeded):
            self.event("mailbox full", failure.getErrorMessage())
            temporary = self.profile.policies.quota_full_tempfail
            self.reply("mailbox_full_temp" if temporary else "mailbox_full", address=failure.value.address)
            return None
        log.failure("storing a message failed", failure)
        self.event("storage failed", failure.getErrorMessage())
        full = getattr(failure.value, "errno", None) in (28, 122)  # ENOSPC, EDQUOT
        self.reply("storage_full" if full else "storage_failed")
        return None

    def trace_headers(self, envelope: Envelope, queue_id: str) -> bytes:
        """Return-Path and Received, as Postfix adds them: learners see them in RETR.

        `from HELO (NAME [IP])`: NAME is the client's host name, `unknown` when it has none
        (loopback is `localhost`, as /etc/hosts names it; a world's MX looks the others up in
        the world's DNS, `client_namer`; other servers do no reverse look-ups);
        `id` is the queue id of the 250 reply; `for <rcpt>` only when there is one recipient
        (Postfix's smtpd, which names no one when a copy goes to several).
        """
        # RFC 3848 registers S (TLS) and A (AUTH) only after ESMTP: a HELO session is plain SMTP.
        with_ = "SMTP"
        if self.esmtp:
            with_ = "ESMTP" + ("S" if self.tls_active else "") + ("A" if self.authenticated_as else "")
        date = self.common_values()["date"]
        name = self.client_name or ("localhost" if self.client_ip in LOOPBACK_NAMES else "unknown")
        literal = f"IPv6:{self.client_ip}" if ":" in self.client_ip else self.client_ip  # RFC 5321 4.1.3
        by = f"\tby {self.profile.hostname} (maillab {self.profile.name}) with {with_} id {queue_id}"
        if len(envelope.recipients) == 1:
            by += f"\r\n\tfor <{envelope.recipients[0]}>"
        received = f"Received: from {self.helo or 'unknown'} ({name} [{literal}])\r\n{by}; {date}\r\n"
        return f"Return-Path: <{envelope.sender}>\r\n{received}".encode("utf-8")

#: Addresses /etc/hosts names `localhost`: the client name a real server writes for them.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "::1"})


def new_queue_id() -> str:
    """A queue id like Postfix's short ones: 10 hex digits, in the Received line and the 250 reply."""
    return os.urandom(5).hex().upper()


class SMTPFactory(protocol.Factory):
    """Builds SMTP sessions that share one server context."""

    noisy = False

    def __init__(self, context: ServerContext, implicit_tls: bool = False) -> None:
        self.context = context
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: object) -> SMTPSession:  # noqa: N802
        session = SMTPSession(self.context)
        session.tls_active = self.implicit_tls
        session.factory = self
        return session
