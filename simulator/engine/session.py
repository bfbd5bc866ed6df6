"""A client-side model of an SMTP or POP3 session, fed with both sides of the conversation.

The TUI, the lesson checker and the validator all need to know "where are we?": greeted or not,
which extensions EHLO offered, who logged in, whose envelope is open, whether the next line the
learner types is a command, a base64 answer or message text. `SMTPSession` and `POP3Session`
follow a session line by line through `.sent(line)` and `.received(reply_lines)` and answer
`next_commands()` ("what may I send now?"). They never talk to a network themselves.

Style (after twisted.mail.smtp): one `_reply_VERB` method per command, so a reader finds what a
reply does to the state next to its verb.
"""

from __future__ import annotations

import copy
import re
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Iterable, Iterator, Sequence, Union

from mailprotocol import pop3 as core_pop3
from mailprotocol import smtp as core_smtp

from . import knowledge
from .auth import AuthExchange
from .commands import POP3Command, SMTPCommand, parse_pop3_command, parse_smtp_command
from .explain import AFTER_CONNECT
from .helpers import apop_timestamp
from .replies import (
    POP3Reply,
    SMTPReply,
    parse_pop3_reply,
    parse_pop3_status,
    split_lines,
    split_smtp_replies,
)

# --- shared vocabulary -----------------------------------------------------------------------


class LineKind(StrEnum):
    """What a line the client sent was, in the session's context."""

    COMMAND = "command"
    AUTH_RESPONSE = "auth-response"  # a base64 answer (or `*`) to a 334 / `+ ` challenge
    MESSAGE = "message"  # a line of DATA text
    END_OF_DATA = "end-of-data"  # the lone "." after DATA
    OCTETS = "octets"  # part of a BDAT chunk
    IGNORED = "ignored"  # sent after the connection closed


class Expect(StrEnum):
    """What the session expects next from the client."""

    COMMAND = "command"
    REPLY = "reply"  # nothing: the client must wait for the server
    AUTH_RESPONSE = "auth-response"
    MESSAGE = "message"
    OCTETS = "octets"
    TLS = "tls"  # the TLS handshake (telnet cannot do it)
    NOTHING = "nothing"  # the session is over


#: Tokens `next_commands()` returns when the next line is not a command verb.
AUTH_RESPONSE = "<base64>"
AUTH_CANCEL = "*"
MESSAGE_LINE = "<message line>"
END_OF_DATA = "."
BDAT_OCTETS = "<octets>"
TLS_HANDSHAKE = "<tls handshake>"


@dataclass(frozen=True)
class Exchange:
    """One completed round: what the client sent (None for a greeting) and the reply."""

    sent: str | None
    kind: str  # "greeting", "command", "auth-response", "end-of-data", "bdat", "unexpected"
    reply: Union[SMTPReply, POP3Reply]
    # What to pass as explain_reply(after=...): the command line, "AUTH <mech>" for AUTH lines
    # (credentials are never repeated), "PASS" for POP3 PASS, "." after DATA, AFTER_CONNECT.
    after: str | None = None


@dataclass
class _Pending:
    line: str
    kind: str
    command: SMTPCommand | POP3Command | None = None
    multiline: bool = False  # POP3: +OK is followed by data lines
    after: str | None = None


# --- SMTP ------------------------------------------------------------------------------------


class SMTPState(StrEnum):
    CONNECTING = "connecting"  # waiting for the 220 greeting
    GREETED = "greeted"  # greeting received, no HELO/EHLO accepted yet
    READY = "ready"  # HELO/EHLO accepted, no mail transaction
    AUTH = "auth"  # inside an AUTH exchange
    MAIL = "mail"  # MAIL FROM accepted, no recipient yet
    RCPT = "rcpt"  # at least one RCPT TO accepted
    DATA = "data"  # 354 received: the client is sending message text
    BDAT = "bdat"  # a CHUNKING transaction is open
    TLS_HANDSHAKE = "tls-handshake"  # 220 to STARTTLS: handshake now
    REVERSED = "reversed"  # TURN/ATRN accepted: roles swapped
    CLOSED = "closed"


#: RFC 2920: commands that may appear anywhere in a pipelined group.
PIPELINABLE = frozenset({"RSET", "MAIL", "SEND", "SOML", "SAML", "RCPT"})
_ALWAYS = core_smtp.ANYTIME
_TLS_WORDS = re.compile(r"STARTTLS|TLS|SSL|secure connection|encrypt", re.IGNORECASE)
_AUTH_WORDS = re.compile(r"\bAUTH|authenticat|log ?in", re.IGNORECASE)


def parse_ehlo_capabilities(reply: SMTPReply) -> dict[str, str]:
    """EHLO keywords (upper case) -> their parameters, from the lines after the first."""
    capabilities: dict[str, str] = {}
    for line in reply.lines[1:]:
        text = line.text.strip()
        if not text:
            continue
        keyword, _, params = text.partition(" ")
        capabilities[keyword.upper()] = params.strip()
    return capabilities


class ClientSession:
    """What the SMTP and POP3 models share: the greeting, TLS, the AUTH exchange, replies matched
    in order to the lines that asked (several when pipelining), and the record of both sides.

    A protocol says how its replies are framed (`_complete_replies`), what one reply does
    (`_handle`, `_reply_VERB`), what a challenge and a successful login look like, and what may
    be sent next (`next_commands`).
    """

    def __init__(self) -> None:
        self.greeting: SMTPReply | POP3Reply | None = None
        self.tls_active = False
        self.tls_pending = False  # the server agreed to STARTTLS/STLS, handshake not reported yet
        self.auth: AuthExchange | None = None  # the exchange in progress
        self.last_auth: AuthExchange | None = None
        self.authenticated_user: str | None = None
        self.auth_failures = 0
        self.closed = False
        self.history: list[Exchange] = []
        self.transcript: list[tuple[str, str]] = []  # ("C" | "S", line)
        self.notices: list[str] = []  # problem keys (messages.toml `problems.*`)
        self._pending: deque[_Pending] = deque()
        self._buffer: list[str] = []

    @property
    def pending(self) -> tuple[str, ...]:
        """Lines sent whose reply has not arrived yet (several when pipelining)."""
        return tuple(item.line for item in self._pending)

    def next_commands(self) -> list[str]:
        raise NotImplementedError

    def allows(self, verb: str) -> bool:
        """True when `verb` (or a token) is among next_commands()."""
        wanted = knowledge.command_verb(verb) or verb
        return wanted in self.next_commands()

    def _tls_done(self) -> None:
        """The handshake finished: what was said in clear text no longer counts (RFC 3207, 2595)."""
        self.tls_pending = False
        self.tls_active = True
        self.auth = None
        self._pending.clear()
        self._buffer.clear()

    # --- the server side -----------------------------------------------------------------

    def received(self, reply_lines: str | bytes | Iterable[str]) -> list[Exchange]:
        """Record what the server sent; complete replies update the state, the rest waits.

        Lines of an unfinished multi-line reply are kept until the rest arrives; several
        pipelined replies may come at once.
        """
        self._buffer.extend(split_lines(reply_lines))
        done: list[Exchange] = []
        for reply, item in self._complete_replies():
            exchange = self._handle(reply, item)
            self.history.append(exchange)
            done.append(exchange)
        return done

    def _complete_replies(self) -> Iterator[tuple[Any, _Pending | None]]:
        raise NotImplementedError

    def _handle(self, reply: Any, item: _Pending | None) -> Exchange:
        raise NotImplementedError

    def _on_command_reply(self, command: SMTPCommand | POP3Command, reply: Any) -> None:
        handler = getattr(self, f"_reply_{command.verb}", None) if command.verb else None
        if handler is not None:
            handler(command, reply)

    def _on_auth_reply(self, reply: Any) -> None:
        """A reply inside AUTH: a challenge continues the exchange, anything else ends it."""
        exchange = self.auth
        if exchange is None:
            return
        challenge = self._challenge(reply)
        if challenge is not None:
            exchange.on_challenge(challenge)
            return
        self.last_auth, self.auth = exchange, None
        if self._login_accepted(reply):
            self._logged_in(exchange.username, reply)
        else:
            self.auth_failures += 1
            self._login_refused(reply)

    def _challenge(self, reply: Any) -> str | None:
        raise NotImplementedError

    def _login_accepted(self, reply: Any) -> bool:
        raise NotImplementedError

    def _logged_in(self, user: str | None, reply: Any) -> None:
        raise NotImplementedError

    def _login_refused(self, reply: Any) -> None:
        """What a refused login teaches about this server (SMTP: that it wants TLS first)."""


class SMTPSession(ClientSession):
    """Follows an SMTP session from the client's side; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.helo_domain: str | None = None
        self.esmtp = False  # greeted with EHLO (extensions known)
        self.capabilities: dict[str, str] = {}
        self.authenticated = False
        self.mail_from: str | None = None  # "" is the null sender <>
        self.mail_params: dict[str, str | None] = {}
        self.recipients: list[str] = []
        self.rejected_recipients: list[str] = []
        self.data_mode = False
        self.message_lines: list[str] = []  # DATA text as sent (dot-unstuffed)
        self.last_message: list[str] = []
        self.bdat_open = False  # a BDAT chunk was accepted in this transaction
        self.bdat_failed = False  # a chunk failed: RFC 3030 wants RSET
        self.bdat_remaining = 0  # octets of the current chunk still to send
        self.bdat_octets = 0  # octets sent in this transaction
        self.messages_accepted = 0
        self.messages_refused = 0
        self.auth_required = False  # learned from a refusal (530, "need AUTH", 5.7.0 ...)
        self.tls_required = False  # learned from a refusal ("Must issue a STARTTLS", QQ's 530)
        self.unsupported: set[str] = set()  # verbs answered 500/502
        self.reversed = False

    # --- what is the state? --------------------------------------------------------------

    @property
    def state(self) -> SMTPState:
        if self.closed:
            return SMTPState.CLOSED
        if self.reversed:
            return SMTPState.REVERSED
        if self.tls_pending:
            return SMTPState.TLS_HANDSHAKE
        if self.greeting is None:
            return SMTPState.CONNECTING
        if self.data_mode:
            return SMTPState.DATA
        if self.auth is not None:
            return SMTPState.AUTH
        if self.bdat_open or self.bdat_remaining:
            return SMTPState.BDAT
        if self.mail_from is not None:
            return SMTPState.RCPT if self.recipients else SMTPState.MAIL
        if self.helo_domain is not None:
            return SMTPState.READY
        return SMTPState.GREETED

    @property
    def in_transaction(self) -> bool:
        return self.mail_from is not None

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.capabilities

    def has_capability(self, keyword: str) -> bool:
        return keyword.upper() in self.capabilities

    @property
    def auth_mechanisms(self) -> list[str]:
        """Mechanisms from the AUTH line (and the legacy AUTH= line) of the last EHLO."""
        found: list[str] = []
        for key, params in self.capabilities.items():
            if key == "AUTH" or key.startswith("AUTH="):
                named = [key[5:]] if key.startswith("AUTH=") else []
                for mech in named + params.upper().split():
                    if mech and mech not in found:
                        found.append(mech)
        return found

    @property
    def auth_offered(self) -> bool:
        return any(key == "AUTH" or key.startswith("AUTH=") for key in self.capabilities)

    @property
    def max_size(self) -> int | None:
        """The SIZE limit the server advertised (0 = no limit), or None."""
        value = self.capabilities.get("SIZE", "").strip()
        return int(value) if value.isdigit() else (0 if "SIZE" in self.capabilities else None)

    @property
    def expecting(self) -> Expect:
        if self.closed or self.reversed:
            return Expect.NOTHING
        if self.tls_pending:
            return Expect.TLS
        if self.data_mode:
            return Expect.MESSAGE
        if self.bdat_remaining:
            return Expect.OCTETS
        if self.auth is not None and self.auth.awaiting_client:
            return Expect.AUTH_RESPONSE
        if self.greeting is None:
            return Expect.REPLY
        if self._pending and not self._may_pipeline():
            return Expect.REPLY
        return Expect.COMMAND

    def _may_pipeline(self) -> bool:
        return self.pipelining and all(
            item.kind == "command" and item.command is not None and item.command.verb in PIPELINABLE
            for item in self._pending
        )

    def next_commands(self) -> list[str]:
        """What the client may send now: verbs first-things-first, or a token for non-commands.

        Tokens: AUTH_RESPONSE/AUTH_CANCEL mid-AUTH, MESSAGE_LINE/END_OF_DATA after 354,
        BDAT_OCTETS inside a chunk, TLS_HANDSHAKE after 220 to STARTTLS; [] when the client
        must wait for a reply or the session is over.
        """
        expect = self.expecting
        if expect is Expect.NOTHING or expect is Expect.REPLY:
            return []
        if expect is Expect.TLS:
            return [TLS_HANDSHAKE]
        if expect is Expect.MESSAGE:
            return [MESSAGE_LINE, END_OF_DATA]
        if expect is Expect.OCTETS:
            return [BDAT_OCTETS]
        if expect is Expect.AUTH_RESPONSE:
            return [AUTH_RESPONSE, AUTH_CANCEL]
        if self._pending:
            return self._assuming_success()._verbs_for_state()
        return self._verbs_for_state()

    def _assuming_success(self) -> "SMTPSession":
        """A copy where every pipelined command got its success reply (to plan the next one)."""
        twin = copy.deepcopy(self)
        while twin._pending:
            twin.received(["250 (assumed)"])
        return twin

    def _verbs_for_state(self) -> list[str]:
        state = self.state
        first: list[str] = []
        caps = self.capabilities
        if state is SMTPState.GREETED:
            first = ["EHLO", "HELO"]
        elif state is SMTPState.READY:
            if "STARTTLS" in caps and not self.tls_active:
                first.append("STARTTLS")
            needs_tls_first = self.tls_required and not self.tls_active
            if self.auth_offered:
                if not self.authenticated and not needs_tls_first:
                    first.append("AUTH")
            if self.authenticated or not (self.auth_required or needs_tls_first):
                first.append("MAIL")
            if "ETRN" in caps:
                first.append("ETRN")
            if "ATRN" in caps and self.authenticated:
                first.append("ATRN")
            first += ["EHLO", "HELO"]
        elif state is SMTPState.MAIL:
            first = ["RCPT"]
        elif state is SMTPState.RCPT:
            first = ["RCPT", "DATA"]
            if "CHUNKING" in caps:
                first.append("BDAT")
        elif state is SMTPState.BDAT:
            first = ["RSET"] if self.bdat_failed else ["BDAT"]
        verbs = first + [v for v in _ALWAYS if v not in first]
        if state in (SMTPState.MAIL, SMTPState.RCPT):
            verbs += ["EHLO", "HELO"]
        if state is SMTPState.BDAT:
            verbs = [v for v in verbs if v in core_smtp.BETWEEN_CHUNKS]
        return [v for v in verbs if v not in self.unsupported]

    # --- the client side -----------------------------------------------------------------

    def sent(self, line: str) -> LineKind:
        """Record a line the client sent (without its CRLF) and classify it."""
        line = line.rstrip("\r\n")
        self.transcript.append(("C", line))
        if self.closed:
            self.notices.append("sent_after_close")
            return LineKind.IGNORED
        if self.data_mode:
            if line == ".":
                self.data_mode = False
                self.last_message = self.message_lines
                self._pending.append(_Pending(line, "end-of-data", after="."))
                return LineKind.END_OF_DATA
            if line.startswith(".") and not line.startswith(".."):
                self.notices.append("dot_not_stuffed")  # the server will drop this dot
            self.message_lines.append(line[1:] if line.startswith(".") else line)
            return LineKind.MESSAGE
        if self.bdat_remaining:
            self._take_octets(len(line.encode("utf-8")) + 2)
            return LineKind.OCTETS
        if self.auth is not None and self.auth.awaiting_client:
            self.auth.on_client_line(line)
            after = f"AUTH {self.auth.mechanism}"
            self._pending.append(_Pending(line, "auth-response", after=after))
            return LineKind.AUTH_RESPONSE
        command = parse_smtp_command(line)
        if self.greeting is None:
            self.notices.append("spoke_before_greeting")
        elif self.tls_pending:
            self.notices.append("plaintext_after_starttls")
        elif self._pending and not self._may_pipeline():
            self.notices.append("not_waiting_for_reply")
        after = line
        if command.verb == "AUTH" and command.mechanism:
            self.auth = AuthExchange.start(command.mechanism, command.initial_response)
            after = f"AUTH {command.mechanism}"
        if command.verb == "BDAT" and command.chunk_size is not None:
            self.bdat_remaining = command.chunk_size
        self._pending.append(_Pending(line, "command", command, after=after))
        return LineKind.COMMAND

    def sent_octets(self, data: bytes) -> None:
        """Record raw BDAT octets sent without line framing."""
        self.transcript.append(("C", data.decode("utf-8", errors="replace")))
        self._take_octets(len(data))

    def _take_octets(self, count: int) -> None:
        if count > self.bdat_remaining:
            self.notices.append("bdat_overrun")
        self.bdat_octets += min(count, self.bdat_remaining)
        self.bdat_remaining = max(0, self.bdat_remaining - count)

    def tls_started(self) -> None:
        """The TLS handshake finished: RFC 3207 resets to just-after-greeting; EHLO again."""
        self._tls_done()
        self.helo_domain = None
        self.esmtp = False
        self.capabilities = {}
        self.authenticated = False
        self.authenticated_user = None
        self._reset_transaction()

    # --- the server side -----------------------------------------------------------------

    def _complete_replies(self) -> Iterator[tuple[SMTPReply, _Pending | None]]:
        """Complete replies; an unfinished multi-line one (`250-...` without its last line) waits."""
        replies, self._buffer = split_smtp_replies(self._buffer)
        for reply in replies:
            yield reply, None

    def _handle(self, reply: SMTPReply, item: _Pending | None = None) -> Exchange:
        for line in reply.raw:
            self.transcript.append(("S", line))
        if not reply.valid:
            self.notices.append("garbage_received")
            return Exchange(None, "unexpected", reply)
        code = reply.code or ""
        if self.greeting is None:
            self.greeting = reply
            if code != "220":
                self.closed = True
            return Exchange(None, "greeting", reply, after=AFTER_CONNECT)
        if not self._pending:
            if code == "421":
                self.closed = True
            else:
                self.notices.append("unexpected_reply")
            return Exchange(None, "unexpected", reply)
        item = self._pending.popleft()
        if item.kind == "command" and item.command is not None:
            self._on_command_reply(item.command, reply)
            kind = "bdat" if item.command.verb == "BDAT" else "command"
        elif item.kind == "auth-response":
            self._on_auth_reply(reply)
            kind = "auth-response"
        else:
            self._on_end_of_data(reply)
            kind = "end-of-data"
        if code in ("421", "221"):
            self.closed = True
        if code[:1] in ("4", "5"):
            self._learn_requirements(item, reply)
        return Exchange(item.line, kind, reply, after=item.after)

    def _learn_requirements(self, item: _Pending, reply: SMTPReply) -> None:
        """Refusals teach what this server wants first (TLS, AUTH), for next_commands()."""
        code = reply.code or ""
        text = " ".join(reply.texts)
        enhanced = str(reply.enhanced) if reply.enhanced else ""
        verb = item.command.verb if item.command else None
        if verb and item.kind == "command" and code in ("500", "502") and enhanced != "5.5.6":
            if verb in knowledge.smtp_commands():
                self.unsupported.add(verb)
        if code in ("530", "538") and _TLS_WORDS.search(text):
            self.tls_required = True
        elif code == "530" or enhanced in ("5.7.0", "5.7.57") or (
            verb in ("MAIL", "RCPT") and code in ("503", "553", "550") and _AUTH_WORDS.search(text)
        ):
            self.auth_required = True

    def _reply_HELO(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "250":
            self.helo_domain = command.argument
            self.esmtp = False
            self.capabilities = {}
            self._reset_transaction()

    def _reply_EHLO(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "250":
            self.helo_domain = command.argument
            self.esmtp = True
            self.capabilities = parse_ehlo_capabilities(reply)
            self._reset_transaction()

    def _reply_STARTTLS(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "220":
            self.tls_pending = True

    def _reply_AUTH(self, command: SMTPCommand, reply: SMTPReply) -> None:
        self._on_auth_reply(reply)

    def _challenge(self, reply: SMTPReply) -> str | None:
        return reply.lines[-1].text if reply.code == "334" else None

    def _login_accepted(self, reply: SMTPReply) -> bool:
        return reply.code == "235"

    def _logged_in(self, user: str | None, reply: SMTPReply) -> None:
        self.authenticated = True
        self.authenticated_user = user

    def _login_refused(self, reply: SMTPReply) -> None:
        if reply.code in ("530", "538"):
            self.tls_required = True

    def _reply_MAIL(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "250":
            self._reset_transaction()
            self.mail_from = command.path if command.path is not None else ""
            self.mail_params = dict(command.params)

    def _reply_RCPT(self, command: SMTPCommand, reply: SMTPReply) -> None:
        address = command.path or command.argument
        if reply.code in ("250", "251"):
            self.recipients.append(address)
        else:
            self.rejected_recipients.append(address)

    def _reply_DATA(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "354":
            self.data_mode = True
            self.message_lines = []

    def _reply_BDAT(self, command: SMTPCommand, reply: SMTPReply) -> None:
        self.bdat_remaining = 0
        if reply.code == "250":
            if command.last_chunk:
                self.messages_accepted += 1
                self._reset_transaction()
            else:
                self.bdat_open = True
        elif self.in_transaction:
            # RFC 3030: the transaction has failed; no more chunks, the client must RSET.
            self.bdat_open = True
            self.bdat_failed = True
            self.messages_refused += 1

    def _reply_RSET(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "250":
            self._reset_transaction()

    def _reply_QUIT(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "221":
            self.closed = True

    def _reply_TURN(self, command: SMTPCommand, reply: SMTPReply) -> None:
        if reply.code == "250":
            self.reversed = True

    _reply_ATRN = _reply_TURN

    def _on_end_of_data(self, reply: SMTPReply) -> None:
        if reply.code == "250":
            self.messages_accepted += 1
        else:
            self.messages_refused += 1
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.mail_from = None
        self.mail_params = {}
        self.recipients = []
        self.rejected_recipients = []
        self.data_mode = False
        self.message_lines = []
        self.bdat_open = False
        self.bdat_failed = False
        self.bdat_remaining = 0
        self.bdat_octets = 0


# --- POP3 ------------------------------------------------------------------------------------


class POP3State(StrEnum):
    CONNECTING = "connecting"  # waiting for the +OK greeting
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"  # QUIT sent from TRANSACTION, deletions being applied
    TLS_HANDSHAKE = "tls-handshake"
    CLOSED = "closed"


_POP3_WAIT_FOR_REPLY = core_pop3.WAITS_FOR_REPLY
_STAT = re.compile(r"^\s*(\d+)\s+(\d+)")
_SCAN = re.compile(r"^\s*(\d+)\s+(\S+)")


class POP3Session(ClientSession):
    """Follows a POP3 session from the client's side; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.apop_timestamp: str | None = None
        self.capabilities: dict[str, str] | None = None  # None until CAPA answered
        self.user: str | None = None  # USER accepted, PASS not yet
        self.logged_in = False
        self.message_count: int | None = None  # messages in the maildrop, deleted ones included
        self.maildrop_size: int | None = None  # octets, from STAT
        self.sizes: dict[int, int] = {}  # from LIST
        self.uids: dict[int, str] = {}  # from UIDL
        self.deleted: set[int] = set()  # marked with DELE in this session
        self.retrieved: set[int] = set()  # RETR/TOP answered +OK
        self.deletions_applied = False
        self.in_update = False

    # --- what is the state? --------------------------------------------------------------

    @property
    def state(self) -> POP3State:
        if self.closed:
            return POP3State.CLOSED
        if self.in_update:
            return POP3State.UPDATE
        if self.tls_pending:
            return POP3State.TLS_HANDSHAKE
        if self.greeting is None:
            return POP3State.CONNECTING
        return POP3State.TRANSACTION if self.logged_in else POP3State.AUTHORIZATION

    def has_capability(self, tag: str) -> bool:
        return self.capabilities is not None and tag.upper() in self.capabilities

    @property
    def sasl_mechanisms(self) -> list[str]:
        if not self.capabilities or "SASL" not in self.capabilities:
            return []
        return self.capabilities["SASL"].upper().split()

    @property
    def available_messages(self) -> list[int] | None:
        """Message numbers that may be referenced now (not marked deleted), or None if unknown."""
        if self.message_count is None:
            return sorted(n for n in self.sizes if n not in self.deleted) if self.sizes else None
        return [n for n in range(1, self.message_count + 1) if n not in self.deleted]

    @property
    def expecting(self) -> Expect:
        if self.closed:
            return Expect.NOTHING
        if self.tls_pending:
            return Expect.TLS
        if self.auth is not None and self.auth.awaiting_client:
            return Expect.AUTH_RESPONSE
        if self.greeting is None:
            return Expect.REPLY
        if self._pending:
            return Expect.COMMAND if self._may_pipeline() else Expect.REPLY
        return Expect.COMMAND

    def _may_pipeline(self) -> bool:
        """RFC 2449 PIPELINING; state-changing commands still wait for their reply."""
        return self.has_capability("PIPELINING") and all(
            item.kind == "command"
            and isinstance(item.command, POP3Command)
            and item.command.verb not in _POP3_WAIT_FOR_REPLY
            for item in self._pending
        )

    def next_commands(self) -> list[str]:
        """What the client may send now (see SMTPSession.next_commands for the tokens)."""
        expect = self.expecting
        if expect is Expect.NOTHING or expect is Expect.REPLY:
            return []
        if expect is Expect.TLS:
            return [TLS_HANDSHAKE]
        if expect is Expect.AUTH_RESPONSE:
            return [AUTH_RESPONSE, AUTH_CANCEL]
        caps = self.capabilities

        def offered(tag: str) -> bool:
            return caps is None or tag in caps

        if self.state is POP3State.AUTHORIZATION:
            if self.user is not None:
                return ["PASS", "QUIT"]
            verbs = []
            if offered("USER"):
                verbs.append("USER")
            if self.apop_timestamp:
                verbs.append("APOP")
            if caps is not None and "SASL" in caps:
                verbs.append("AUTH")
            verbs.append("CAPA")
            if caps is not None and "STLS" in caps and not self.tls_active:
                verbs.insert(0, "STLS")
            return verbs + ["QUIT"]
        verbs = ["STAT", "LIST"]
        available = self.available_messages
        if available is None or available:
            verbs += ["RETR", "DELE"]
            if offered("TOP"):
                verbs.append("TOP")
        if offered("UIDL"):
            verbs.append("UIDL")
        return verbs + [v.name for v in core_pop3.VERBS if core_pop3.TRANSACTION in v.states and v.argument == "none" and v.name != "STAT"]

    # --- the client side -----------------------------------------------------------------

    def sent(self, line: str) -> LineKind:
        """Record a line the client sent (without CRLF) and classify it."""
        line = line.rstrip("\r\n")
        self.transcript.append(("C", line))
        if self.closed:
            self.notices.append("sent_after_close")
            return LineKind.IGNORED
        if self.auth is not None and self.auth.awaiting_client:
            self.auth.on_client_line(line)
            self._pending.append(_Pending(line, "auth-response", after=f"AUTH {self.auth.mechanism}"))
            return LineKind.AUTH_RESPONSE
        command = parse_pop3_command(line)
        if self.greeting is None:
            self.notices.append("spoke_before_greeting")
        elif self._pending and not self._may_pipeline():
            self.notices.append("not_waiting_for_reply")
        after = line
        if command.verb == "AUTH" and command.arguments:
            initial = command.arguments[1] if len(command.arguments) > 1 else None
            self.auth = AuthExchange.start(command.arguments[0], initial)
            after = f"AUTH {self.auth.mechanism}"
        elif command.verb == "PASS":
            after = "PASS"  # never echo the password into explanations
        elif command.verb == "QUIT" and self.logged_in:
            self.in_update = True
        self._pending.append(_Pending(line, "command", command, self._is_multiline(command), after))
        return LineKind.COMMAND

    @staticmethod
    def _is_multiline(command: POP3Command) -> bool:
        return core_pop3.multiline_reply(command.verb or "", " ".join(command.arguments))

    def tls_started(self) -> None:
        """The STLS handshake finished: forget the capabilities (RFC 2595 4), ask CAPA again."""
        self._tls_done()
        self.capabilities = None

    # --- the server side -----------------------------------------------------------------

    def _complete_replies(self) -> Iterator[tuple[POP3Reply, _Pending | None]]:
        """One response at a time: a multi-line one waits for its final `.`."""
        while self._buffer:
            taken = self._take_reply()
            if taken is None:
                return
            yield taken

    def _take_reply(self) -> tuple[POP3Reply, _Pending | None] | None:
        item = self._pending[0] if (self.greeting is not None and self._pending) else None
        kind = parse_pop3_status(self._buffer[0])[0]
        if item is not None and item.multiline and kind == "ok":
            try:
                end = self._buffer.index(".", 1)
            except ValueError:
                return None  # wait for the rest
            lines, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
            return parse_pop3_reply(lines, multiline=True), item
        line = self._buffer.pop(0)
        return parse_pop3_reply([line], multiline=False), item

    def _handle(self, reply: POP3Reply, item: _Pending | None) -> Exchange:
        for line in reply.raw:
            self.transcript.append(("S", line))
        if reply.kind == "invalid":
            self.notices.append("garbage_received")
            return Exchange(None, "unexpected", reply)
        if self.greeting is None:
            self.greeting = reply
            if reply.ok:
                self.apop_timestamp = apop_timestamp(reply.text)
            else:
                self.closed = True
            return Exchange(None, "greeting", reply, after=AFTER_CONNECT)
        if item is None:
            self.notices.append("unexpected_reply")
            return Exchange(None, "unexpected", reply)
        self._pending.popleft()
        if item.kind == "auth-response":
            self._on_auth_reply(reply)
            return Exchange(item.line, "auth-response", reply, after=item.after)
        command = item.command
        assert isinstance(command, POP3Command)
        self._on_command_reply(command, reply)
        return Exchange(item.line, "command", reply, after=item.after)

    def _reply_USER(self, command: POP3Command, reply: POP3Reply) -> None:
        self.user = command.argument if reply.ok else None

    def _reply_PASS(self, command: POP3Command, reply: POP3Reply) -> None:
        if reply.ok and self.user is not None:
            self._logged_in(self.user, reply)
        else:
            self.auth_failures += 1
        self.user = None

    def _reply_APOP(self, command: POP3Command, reply: POP3Reply) -> None:
        if reply.ok:
            self._logged_in(command.arguments[0] if command.arguments else "", reply)
        else:
            self.auth_failures += 1

    def _reply_AUTH(self, command: POP3Command, reply: POP3Reply) -> None:
        self._on_auth_reply(reply)

    def _challenge(self, reply: POP3Reply) -> str | None:
        return reply.text if reply.kind == "continuation" else None

    def _login_accepted(self, reply: POP3Reply) -> bool:
        return reply.ok

    def _logged_in(self, user: str | None, reply: POP3Reply) -> None:
        self.logged_in = True
        self.authenticated_user = user
        self.deleted = set()

    def _reply_CAPA(self, command: POP3Command, reply: POP3Reply) -> None:
        if reply.ok:
            caps: dict[str, str] = {}
            for line in reply.data:
                tag, _, params = line.strip().partition(" ")
                if tag:
                    caps[tag.upper()] = params.strip()
            self.capabilities = caps

    def _reply_STLS(self, command: POP3Command, reply: POP3Reply) -> None:
        if reply.ok:
            self.tls_pending = True

    def _reply_STAT(self, command: POP3Command, reply: POP3Reply) -> None:
        match = _STAT.match(reply.text) if reply.ok else None
        if match:
            count, size = int(match.group(1)), int(match.group(2))
            self.message_count = max(count + len(self.deleted), self.message_count or 0)
            self.maildrop_size = size

    def _reply_LIST(self, command: POP3Command, reply: POP3Reply) -> None:
        if not reply.ok:
            return
        rows = reply.data if not command.arguments else (reply.text,)
        for row in rows:
            match = _SCAN.match(row)
            if match and match.group(2).isdigit():
                self.sizes[int(match.group(1))] = int(match.group(2))
        if not command.arguments:
            highest = max(list(self.sizes) + list(self.deleted), default=0)
            self.message_count = max(highest, self.message_count or 0)

    def _reply_UIDL(self, command: POP3Command, reply: POP3Reply) -> None:
        if not reply.ok:
            return
        rows = reply.data if not command.arguments else (reply.text,)
        for row in rows:
            match = _SCAN.match(row)
            if match:
                self.uids[int(match.group(1))] = match.group(2)

    def _reply_RETR(self, command: POP3Command, reply: POP3Reply) -> None:
        number = command.number()
        if reply.ok and number is not None:
            self.retrieved.add(number)

    _reply_TOP = _reply_RETR

    def _reply_DELE(self, command: POP3Command, reply: POP3Reply) -> None:
        number = command.number()
        if reply.ok and number is not None:
            self.deleted.add(number)

    def _reply_RSET(self, command: POP3Command, reply: POP3Reply) -> None:
        if reply.ok:
            self.deleted = set()

    def _reply_QUIT(self, command: POP3Command, reply: POP3Reply) -> None:
        self.deletions_applied = self.in_update and reply.ok
        self.in_update = False
        self.closed = True


Session = Union[SMTPSession, POP3Session]


def replay(session: Session, transcript: Sequence[tuple[str, str]]) -> Session:
    """Feed a transcript of ("C" | "S", line) pairs into a session (tests, lesson checks)."""
    for direction, line in transcript:
        if direction.upper().startswith("C"):
            session.sent(line)
        else:
            session.received([line])
    return session
