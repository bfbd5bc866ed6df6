"""What SMTP and POP3 sessions share: line framing, ordered replies, transcripts, idle timeouts.

`LineSession` frames input itself (rather than with `basic.LineReceiver`) because a teaching server
must survive what LineReceiver does not: a command line over the limit is answered and the session
goes on, bare-LF lines from `nc` are accepted, and a command whose answer is not ready yet (a
message being fsynced, a password being checked, a tarpit delay) holds back the commands pipelined
behind it, so replies always leave in order.
"""

from __future__ import annotations

import email.utils
import functools
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, interfaces, protocol, task, tcp
from twisted.internet.interfaces import IWriteDescriptor
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from .blocking import BlockingWorkers
from mailprotocol.faults import CONNECT, DATA_END, FaultAction, FaultScript, FaultTracker
from .limits import ServerLimits
from .masking import KnownSecrets
from .output import OutputQueue, safe_text
from .profile import Profile
from .arrival import Arrival, Verdict
from .store import MailStore
from .transcripts import TranscriptWriter

log = Logger(namespace="maillab")

_session_numbers = itertools.count(1)

#: Input bytes held while a command waits before the connection stops being read.
MAX_HELD_INPUT = 256 * 1024

#: Octets of replies written in one turn that `send_now` hands to the kernel at once; more (a
#: long RETR, a flood of pipelined commands) leave on the reactor's next turn as Twisted does.
SEND_NOW_LIMIT = 16 * 1024

#: Replies `write` sends straight to the socket in one turn; a client that pipelines more (a flood
#: of commands in one read) has them gathered by the transport and sent together, as before.
DIRECT_WRITES = 4

#: Seconds a closing TLS session waits for the client's close_notify before hanging up anyway.
TLS_CLOSE_GRACE = 1.0

#: Seconds a closing session waits for its last replies to drain before the socket is aborted: a
#: client that never reads must not keep a connection and its output buffer forever.
CLOSE_DRAIN_GRACE = 30.0

#: Seconds a connection over its client's `max_connections_per_client` waits before it is refused.
#: A client that hangs up and connects again at once (Ctrl+R, a lesson's reconnect) can arrive
#: before the server has read its old connection's close; once that close is read, the slot is free.
RECONNECT_GRACE = 0.25


@dataclass(frozen=True)
class ServerEvent:
    """One thing worth seeing in the server log or the TUI: a connection, a login, a message."""

    protocol: str
    session: str
    kind: str
    peer: str
    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        """One log line; what a client typed (a user name, a HELO) is escaped, never a control."""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        text = f"{stamp} {self.protocol} {self.session} {self.peer} {self.kind}"
        return safe_text(f"{text}: {self.detail}" if self.detail else text)


@dataclass(frozen=True)
class SessionLine:
    """One line of a session as it happens, for live views (never written anywhere).

    `text` is what a transcript shows (secrets replaced by ***); `raw` is the line itself, so a
    local lesson checker can verify an AUTH answer that must never be logged.
    """

    protocol: str
    session: str
    peer: str
    direction: str  # "c" client, "s" server
    text: str
    raw: str


class EventHub:
    """Fan-out of server events (and, when someone listens, of every line) to subscribers."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[ServerEvent], None]] = []
        self._line_subscribers: list[Callable[[SessionLine], None]] = []

    def subscribe(self, callback: Callable[[ServerEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def subscribe_lines(self, callback: Callable[[SessionLine], None]) -> Callable[[], None]:
        self._line_subscribers.append(callback)
        return lambda: self._line_subscribers.remove(callback) if callback in self._line_subscribers else None

    @property
    def wants_lines(self) -> bool:
        return bool(self._line_subscribers)

    @property
    def wants_events(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: ServerEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break a mail session
                log.failure("event subscriber failed")

    def publish_line(self, line: SessionLine) -> None:
        for callback in list(self._line_subscribers):
            try:
                callback(line)
            except Exception:
                log.failure("line subscriber failed")


@dataclass
class ServerContext:
    """Everything a session needs from the server it belongs to."""

    profile: Profile
    store: MailStore
    portal: Any
    events: EventHub
    transcripts_dir: Path | None = None
    tls_options: Any = None
    tls_subject: str = ""  # the certificate the server presents, for the transcript's TLS event
    clock: Any = None  # an IReactorTime; the global reactor when None
    record_transcripts: bool = True
    synchronous_io: bool = False  # tests with fake transports: run store calls inline
    limits: ServerLimits = field(default_factory=ServerLimits)
    faults: FaultScript | None = None
    sessions: set[Any] = field(default_factory=set)
    output: OutputQueue | None = None  # transcripts written by its thread; None: written inline (tests)
    workers: BlockingWorkers | None = None  # run_blocking's threads; None: Twisted's thread pool
    #: Blocking check of a message before it is stored (run in a worker thread): a world's MX
    #: checks SPF/DKIM/DMARC here. None: every message is stored as it came.
    message_check: Callable[[Arrival], Verdict] | None = None
    #: Asynchronous name of a client's IP (a Deferred firing with the name or None): a world's
    #: MX asks the world's DNS, forward-confirmed, for its Received lines. None: no look-up.
    client_namer: Callable[[str], defer.Deferred] | None = None

    def __post_init__(self) -> None:
        self.known_secrets = KnownSecrets.of_accounts(self.profile.accounts)
        if self.faults is None:
            self.faults = FaultScript(tuple(self.profile.faults), self.profile.seed)

    def now(self) -> float:
        return self.reactor_time().seconds()

    def run_blocking(self, function: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run blocking store work (fsync) off the reactor thread, so other sessions go on."""
        if self.synchronous_io:
            return defer.maybeDeferred(function, *args)
        if self.workers is not None:
            return self.workers.run(function, *args)
        from twisted.internet import threads

        return threads.deferToThread(function, *args)

    def reactor_time(self) -> Any:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor  # asked for on every command: the import machinery once
        return self.clock


@functools.lru_cache(maxsize=4)
def _date(epoch: int) -> str:
    """RFC 5322 date, formatted once per second however many replies ask for it."""
    return email.utils.formatdate(epoch, localtime=True)


@implementer(interfaces.IPushProducer, interfaces.IHalfCloseableProtocol)
class LineSession(protocol.Protocol, TimeoutMixin):
    """Base of the SMTP and POP3 sessions.

    Flow control, both ways: while a command waits (disk, tarpit) the input behind it is held, up
    to MAX_HELD_INPUT, then the socket is no longer read; and the session is a streaming producer
    for its own transport, so when a client does not read its replies (Twisted's write buffer
    passes 64 KiB) the session runs no more commands until the buffer drains, holding what arrives
    up to MAX_HELD_INPUT before it stops reading too. Memory per session is thus bounded whatever
    the client does (tests/test_hardening_sockets.py). A client that half-closes (shutdown(SHUT_WR))
    still gets the replies to what it sent, then the session ends.
    """

    protocol_name = "?"
    #: raw handler: called with (data, position), returns the new position; set by DATA/BDAT.
    _raw_handler: Callable[[bytes, int], int] | None = None
    _unsent = 0  # octets of replies written since the last send_now
    _sending = False  # inside send_now (doWrite may resume this producer, which processes input)
    _socket: Any = None  # a plain TCP transport's socket, for `write` to send on directly
    _buffered = False  # the transport has been given output: every later write goes through it
    _direct_writes = 0  # replies sent straight to the socket since the last send_now
    _direct_octets = 0

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.profile = context.profile
        self.session_id = f"{self.protocol_name.lower()}-{int(time.time())}-{next(_session_numbers)}"
        self.peer = "?"
        self.tls_active = False
        self._pending = b""
        self._pos = 0
        self._discarding = False
        self._busy: defer.Deferred | None = None
        self._closed = False
        self._paused_transport = False  # reading stopped (held input, or output not draining)
        self._output_blocked = False  # the transport asked us to pause: its write buffer is full
        self._input_ended = False  # the client half-closed; close once its commands are answered
        self._producing = False  # registered as the transport's producer
        self._processing = False
        self.transcript: TranscriptWriter | None = None
        self.client_ip = "?"
        self.started_at = 0.0
        self.last_active = 0.0  # when the last complete line arrived (eviction picks the stalest)
        self._slow_since: float | None = None  # start of input without a line end
        self._slow_bytes = 0
        self._rate_call: Any = None
        self._lifetime_call: Any = None
        self._slot_call: Any = None  # the one look again for a per-client slot (RECONNECT_GRACE)
        self._counted = False
        self._abort_call: Any = None
        self.short_id = os.urandom(6).hex()
        assert context.faults is not None
        #: Fault counting; the subclass feeds it what the core's answers change (login, TLS, envelope).
        self.fault_tracker = FaultTracker(context.faults, self.protocol_name.lower())
        #: The verb whose answer is being carried out (AUTH for a SASL line), for `FaultTracker.answered`.
        self.answering = ""

    # --- limits the subclass decides ---------------------------------------------------------

    def line_limit(self) -> int:
        """Octets a command line may take, CRLF included."""
        raise NotImplementedError

    def line_limit_for(self, start: bytes) -> int:
        """The limit for a line that starts with `start` (extensions may allow more)."""
        return self.line_limit()

    def idle_timeout(self) -> float:
        raise NotImplementedError

    def line_received(self, line: bytes) -> defer.Deferred | None:
        raise NotImplementedError

    def line_too_long(self) -> None:
        raise NotImplementedError

    def timed_out(self) -> None:
        raise NotImplementedError

    def internal_error(self) -> None:
        raise NotImplementedError

    # --- connection --------------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        clock = self.context.reactor_time()
        self.callLater = clock.callLater
        self.started_at = self.last_active = clock.seconds()
        no_delay = getattr(self.transport, "setTcpNoDelay", None)  # ITCPTransport; fakes have none
        if no_delay is not None:
            # Replies are always written whole, so Nagle's algorithm only ever holds back the last
            # segment of a long answer (a RETR of 100 KB) until the client's delayed ACK.
            no_delay(True)
        if isinstance(self.transport, tcp.Connection):  # not a TLS wrapper, not a test's fake
            self._socket = self.transport.getHandle()
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.client_ip = getattr(peer, "host", "?")
        if self.context.record_transcripts and self.context.transcripts_dir is not None:
            self.transcript = TranscriptWriter(
                self.context.transcripts_dir, self.session_id, self.protocol_name, self.peer, self.profile.name,
                flush=False, sink=self.context.output,
            )
        try:
            self._connected()
        finally:
            if self.transcript is not None:
                self.transcript.flush()  # the open record and the greeting in one write
            self.send_now()

    def _connected(self) -> None:
        self.event("connected")
        if self.tls_active:
            # An implicit-TLS port (465, 995; RFC 8314): the session is in TLS from its first byte,
            # and the log and the transcript say so as they do after STARTTLS/STLS.
            self.event("tls", "implicit TLS (TLS from the first byte)", implicit=True, certificate=self.context.tls_subject)
        self._take_slot(look_again=True)

    def _take_slot(self, look_again: bool = False) -> None:
        """Count this connection against the caps and greet it, or refuse it with 421."""
        clock = self.context.reactor_time()
        policies = self.profile.policies
        refused = self._open_slot()
        if refused == "client" and look_again:
            self._slot_call = self.callLater(RECONNECT_GRACE, self._take_slot_after_grace)
            return
        if refused is not None:
            self.event("connection refused", f"too many connections ({'from this client' if refused == 'client' else 'in all'})")
            self.reply("too_many_connections", client_ip=self.client_ip)
            self.close()
            return
        self._counted = True
        self.context.sessions.add(self)
        register = getattr(self.transport, "registerProducer", None)
        if register is not None:
            register(self, True)
            self._producing = True
        self.setTimeout(self.idle_timeout())
        if policies.max_session_time > 0:
            self._lifetime_call = self.callLater(policies.max_session_time, self._lifetime_over)
        action = self.fault("CONNECT")
        if action is not None:
            self.wait_for_result(self.run_fault(action, self.session_started))
        elif policies.tarpit_delay:
            self.wait_for(task.deferLater(clock, policies.tarpit_delay, self.session_started))
        else:
            self.session_started()

    def _take_slot_after_grace(self) -> None:
        self._slot_call = None
        if self._closed:
            return
        try:
            self._take_slot()
        finally:
            if self.transcript is not None:
                self.transcript.flush()
            self.send_now()

    def _open_slot(self) -> str | None:
        """Take a connection slot; when a server-wide or protocol cap is full, evict for a newcomer.

        Caps full of idle connections must not lock the class out: when the newcomer's address
        holds at least two sessions fewer than the address holding the most, that address's
        least recently active session is told `too_many_connections` and closed, and the
        newcomer takes its slot (Postfix's anvil refuses instead; a lab prefers the student who
        has nothing over the one who holds dozens).
        """
        limits, policies = self.context.limits, self.profile.policies
        refused = limits.open(self.protocol_name, self.client_ip, policies.max_connections, policies.max_connections_per_client)
        if refused not in ("server", "total"):
            return refused
        scope = None if refused == "server" else self.protocol_name
        heaviest, held = limits.heaviest_client(scope)
        if held < limits.held_by(self.client_ip, scope) + 2:
            return refused
        candidates = [
            session for session in self.context.sessions
            if session.client_ip == heaviest and not session._closed and (scope is None or session.protocol_name == scope)
        ]  # fmt: skip
        if not candidates:
            return refused
        victim = min(candidates, key=lambda session: session.last_active)
        victim.evict()
        return limits.open(self.protocol_name, self.client_ip, policies.max_connections, policies.max_connections_per_client)

    def evict(self) -> None:
        """Give up this connection's slot to a client that holds fewer (see `_open_slot`)."""
        self.event("connection evicted", "the server is full and this client holds the most connections")
        self.reply("too_many_connections", client_ip=self.client_ip)
        self.close()

    def reply(self, key: str, **values: Any) -> None:
        """Send the profile's reply `key` (the subclass renders it)."""
        raise NotImplementedError

    def render_fault(self, lines: tuple[str, ...]) -> list[str]:
        return list(lines)

    def common_values(self) -> dict[str, Any]:
        """Placeholders every reply of this session may use ({client_ip} {session} {date} {epoch})."""
        epoch = int(self.context.now())
        return {"client_ip": self.client_ip, "session": self.short_id, "date": _date(epoch), "epoch": epoch}

    # --- faults ------------------------------------------------------------------------------

    def fault(self, command: str, argument: str = "") -> FaultAction | None:
        """The rule that fires for a command, CONNECT or DATA-END (its argument: the tracker's recipients)."""
        faults = self.context.faults
        if faults is None or not faults.rules:
            return None
        tracker, where = self.fault_tracker, {"client": self.client_ip, "elapsed": self.context.now() - self.started_at}
        if command == CONNECT:
            return tracker.connect(**where)
        if command == DATA_END:
            return tracker.end_of_data(**where)
        return tracker.command(command, argument, **where)

    def run_fault(self, action: FaultAction, proceed: Callable[[], Any]) -> defer.Deferred | None:
        """Reply with the scripted text, drop the connection, or wait and then go on as usual."""

        def act() -> Any:
            self.event("fault", action.rule.describe())
            if action.reply:
                self.send_lines(self.render_fault(action.reply))
                if action.reply[-1].startswith("421"):
                    self.close()
            if action.drop:
                if action.reply:
                    self.close()
                else:
                    self._closed = True
                    self.transport.abortConnection()
                return None
            if not action.reply:
                return proceed()
            return None

        if action.delay:
            return task.deferLater(self.context.reactor_time(), action.delay, act)
        return act()

    def wait_for_result(self, result: Any) -> None:
        if isinstance(result, defer.Deferred):
            self.wait_for(result)

    def session_started(self) -> None:
        """Send the greeting."""

    def connectionLost(self, reason: object = None) -> None:  # noqa: N802
        self._closed = True
        self.setTimeout(None)
        self.context.sessions.discard(self)
        for call in (self._abort_call, self._rate_call, self._lifetime_call, self._slot_call):
            if call is not None and call.active():
                call.cancel()
        if self._counted:
            self._counted = False
            self.context.limits.close(self.protocol_name, self.client_ip)
        self.session_ended()
        self.event("disconnected")
        if self.transcript is not None:
            self.transcript.close()

    def session_ended(self) -> None:
        """Release what the session holds (POP3 maildrop lock)."""

    def timeoutConnection(self) -> None:  # noqa: N802
        self.event("idle timeout", f"{self.idle_timeout():g} s without a command")
        self.timed_out()
        self.close()

    def close(self) -> None:
        """Close after the replies already written have left (or give up after a grace period)."""
        self._closed = True
        self._raw_handler = None
        self._release()
        if self._producing:
            # A registered producer keeps loseConnection from ever completing (Twisted's rule).
            self._producing = False
            self.transport.unregisterProducer()
        if self._paused_transport:
            # A paused TLS transport could never read the peer's close_notify and would linger.
            self._paused_transport = False
            self.transport.resumeProducing()
        self.transport.loseConnection()
        if self._abort_call is None and getattr(self.transport, "connected", True):
            # TLS close waits for the peer's close_notify, which many clients never send; a plain
            # close waits for the output buffer to drain, which a client that never reads prevents.
            grace = TLS_CLOSE_GRACE if self.tls_active else CLOSE_DRAIN_GRACE
            self._abort_call = self.callLater(grace, self._abort)

    def _release(self) -> None:
        """The session is over once it closes: free its connection slot and what it holds now.

        Not when the socket is finally gone (a turn of the reactor later, or after the drain
        grace): a client that reconnects at once must find its `max_connections_per_client` slot
        and its POP3 maildrop free, as it did when EOF dropped the connection at once.
        """
        if self._counted:
            self._counted = False
            self.context.limits.close(self.protocol_name, self.client_ip)
        self.session_closing()

    def session_closing(self) -> None:
        """close() was called: release what the session holds (default: as `session_ended`)."""
        self.session_ended()

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()

    # --- flow control (IPushProducer for the transport, IHalfCloseableProtocol) ---------------

    def pauseProducing(self) -> None:  # noqa: N802
        """The transport's write buffer is full: run no more commands until it drains.

        Input is still read, and held, up to MAX_HELD_INPUT (`dataReceived` then stops reading):
        a TLS transport also pauses its producer while the handshake is under way, and the
        handshake needs the socket to be read.
        """
        self._output_blocked = True
        if len(self._pending) - self._pos > MAX_HELD_INPUT:
            self._stop_reading()

    def resumeProducing(self) -> None:  # noqa: N802
        """The client has read its replies: go on with the input already received."""
        if not self._output_blocked:
            return
        self._output_blocked = False
        if self._closed:
            return
        self._maybe_resume_reading()
        if self._busy is None and not self._processing:
            self._process()

    def stopProducing(self) -> None:  # noqa: N802
        """The connection is gone (connectionLost follows)."""
        self._producing = False

    def readConnectionLost(self) -> None:  # noqa: N802
        """The client shut its sending side down: answer what it sent, then close."""
        self._input_ended = True
        if not self._closed and self._busy is None and not self._processing and not self._output_blocked:
            self._process()

    def writeConnectionLost(self) -> None:  # noqa: N802
        """Never asked for (the session does not half-close); nothing to do."""

    def _stop_reading(self) -> None:
        if not self._paused_transport and not self._closed:
            self._paused_transport = True
            self.transport.pauseProducing()

    def _maybe_resume_reading(self) -> None:
        """Read again once the output drains and the held input is back under MAX_HELD_INPUT."""
        if (
            self._paused_transport
            and not self._closed
            and not self._output_blocked
            and len(self._pending) - self._pos <= MAX_HELD_INPUT
        ):
            self._paused_transport = False
            self.transport.resumeProducing()

    def shut_down(self) -> None:
        """The server is stopping: say so (421 / -ERR [SYS/TEMP]) and hang up."""
        if not self._closed:
            self.reply("shutdown")
            self.close()

    # --- output ------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send `data` to the client: straight to the socket when nothing waits before it, else queued
        for `send_now`, which hands it to the kernel when the turn's work is done.

        The plain TCP transport registers the socket with epoll for writing before every send and
        removes it after (two system calls per reply, ~10 % of the reactor under classroom_load).
        While the transport holds nothing, a reply can go out with one `send` on the socket
        (ISystemHandle.getHandle) instead. The first time anything is left over (the socket is
        full, an error, more than DIRECT_WRITES replies or SEND_NOW_LIMIT octets in one turn,
        TLS, closing), it and everything after it go through the transport as before, so the
        order of the bytes, flow control and error handling stay Twisted's.
        """
        sock = self._socket
        if (
            sock is not None
            and not self._buffered
            and self._direct_writes < DIRECT_WRITES
            and self._direct_octets + len(data) <= SEND_NOW_LIMIT
            and not self.tls_active
            and not self.transport.TLS
            and not self.transport.disconnecting
        ):
            try:
                sent = sock.send(data)
            except OSError:  # full (EAGAIN) or broken: the transport buffers it and sees the error
                sent = 0
            self._direct_writes += 1
            self._direct_octets += sent
            if sent == len(data):
                return
            data = data[sent:]
        self._buffered = True  # from now on the transport's buffer may hold something: use it
        self.transport.write(data)
        self._unsent += len(data)

    def send_now(self) -> None:
        """Hand the replies written so far to the kernel now rather than on the reactor's next turn.

        A plain TCP transport keeps writes until epoll reports the socket writable, one loop
        iteration later: a delay on every reply for a client that waits for each one (a mail
        client sending one message, poplib's RETR). `doWrite` (IWriteDescriptor) sends what the
        socket takes now and leaves the rest to the reactor as before. Only for a turn's worth of
        interactive replies (up to SEND_NOW_LIMIT octets) while the client keeps up: a flood, or
        a client that does not read, is left to the reactor's pace and its flow control. Not over
        TLS (its layer buffers on its own) nor once the connection is closing (doWrite would then
        finish the close outside the reactor's bookkeeping).
        """
        self._direct_writes = self._direct_octets = 0  # a new turn
        unsent, self._unsent = self._unsent, 0
        if not unsent or unsent > SEND_NOW_LIMIT or self._sending or self._output_blocked:
            return
        transport = self.transport
        if self.tls_active or getattr(transport, "disconnecting", True) or not IWriteDescriptor.providedBy(transport):
            return
        self._sending = True
        try:
            transport.doWrite()  # a failed send stays buffered; the reactor sees the error next turn
        finally:
            self._sending = False

    def send_lines(self, lines: list[str]) -> None:
        if self._closed and not self.transport.connected:
            return
        self.write(("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape"))
        if self.transcript is not None:
            mask = self.context.known_secrets.mask  # a reply may echo what the client typed
            for line in lines:
                self.transcript.server(mask(line))
        self.publish_server_lines(lines)

    def publish_server_lines(self, lines: list[str]) -> None:
        """Lines the server sent, for live views only (watch mode follows outside sessions)."""
        hub = self.context.events
        if hub.wants_lines:
            mask = self.context.known_secrets.mask
            for line in lines:
                hub.publish_line(SessionLine(self.protocol_name, self.session_id, self.peer, "s", mask(line), line))

    def record_client(self, text: str, raw: str | None = None) -> None:
        """Note a client line: `text` for transcripts (redacted), `raw` only for live listeners.

        A known secret typed anywhere (as a user name, base64-encoded, in a message) is hidden too.
        """
        text = self.context.known_secrets.mask(text)
        if self.transcript is not None:
            self.transcript.client(text)
        hub = self.context.events
        if hub.wants_lines:
            hub.publish_line(
                SessionLine(self.protocol_name, self.session_id, self.peer, "c", text, text if raw is None else raw)
            )

    def event(self, kind: str, detail: str = "", **fields: Any) -> None:
        secrets = self.context.known_secrets
        detail = secrets.mask(detail)
        if "user" in fields:
            fields["user"] = secrets.mask(str(fields["user"]))
        if self.transcript is not None and kind not in ("connected", "disconnected"):
            self.transcript.event(kind, detail=detail, **fields)
        hub = self.context.events
        if hub.wants_events:
            hub.publish(ServerEvent(self.protocol_name, self.session_id, kind, self.peer, detail, fields))

    # --- authentication throttling -----------------------------------------------------------

    def auth_locked_out(self) -> bool:
        """Too many failed logins from this client lately: refuse without checking any secret."""
        policies = self.profile.policies
        return self.context.limits.client_locked_out(
            self.client_ip, self.context.now(), policies.auth_lockout_window, policies.auth_lockout_failures
        )

    def auth_failure_pause(self, user: str | None) -> defer.Deferred | None:
        """Record a failed login; a Deferred firing after the delay the failure earns (None: answer now).

        The delay doubles with each failure of the client or of the account within the window
        (Dovecot's `auth_failure_delay`, growing), up to `auth_failure_delay_max`. Only accounts
        that exist are tracked, so a flood of invented names cannot grow the server's memory.
        """
        policies = self.profile.policies
        known = bool(user) and self.profile.find_account(user) is not None
        worst = self.context.limits.record_auth_failure(
            self.protocol_name, self.client_ip, user or "", known, self.context.now(), policies.auth_lockout_window
        )
        if policies.auth_failure_delay <= 0:
            return None
        delay = min(policies.auth_failure_delay * 2 ** min(worst - 1, 30), policies.auth_failure_delay_max)
        return task.deferLater(self.context.reactor_time(), delay, lambda: None)

    def persona_auth_failures(self) -> int:
        """This client's failures in this protocol within the window, for the persona's `max_auth_failures`."""
        return self.context.limits.auth_failure_count(
            self.protocol_name, self.client_ip, self.context.now(), self.profile.policies.auth_lockout_window
        )

    # --- slow clients (slowloris) -------------------------------------------------------------

    def _note_progress(self, data: bytes) -> None:
        """Only a complete line resets the idle timer; unfinished input must keep a minimum rate.

        A client that sends one byte every few seconds and never a line end would otherwise keep
        its slot forever. Bytes after the last LF start (or continue) an unfinished stretch, which
        `_check_rate` measures every `rate_grace` seconds against `min_data_rate`.
        """
        now = self.context.now()
        last_newline = data.rfind(b"\n")
        if last_newline >= 0:
            self.resetTimeout()
            self.last_active = now
            self._slow_since = None
            tail = len(data) - last_newline - 1
        else:
            tail = len(data)
        if not tail:
            return
        if self._slow_since is None:
            self._slow_since, self._slow_bytes = now, 0
            if self._rate_call is None or not self._rate_call.active():
                grace = self.profile.policies.rate_grace
                if grace > 0 and self.profile.policies.min_data_rate > 0:
                    self._rate_call = self.callLater(grace, self._check_rate)
        self._slow_bytes += tail

    def _check_rate(self) -> None:
        self._rate_call = None
        if self._closed or self._slow_since is None:
            return
        policies = self.profile.policies
        elapsed = self.context.now() - self._slow_since
        if self._slow_bytes < policies.min_data_rate * elapsed:
            self.event("too slow", f"{self._slow_bytes} bytes in {elapsed:.1f} s without a line end (minimum {policies.min_data_rate:g} bytes/s)")
            self.timed_out()
            self.close()
            return
        self.resetTimeout()  # steady progress (a large chunk without line ends) is activity
        self._slow_since, self._slow_bytes = self.context.now(), 0
        self._rate_call = self.callLater(policies.rate_grace, self._check_rate)

    def _lifetime_over(self) -> None:
        self._lifetime_call = None
        if not self._closed:
            self.event("session too long", f"open for {self.profile.policies.max_session_time:g} s")
            self.timed_out()
            self.close()

    # --- input framing -----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closed:
            return
        self._note_progress(data)
        if self._pos:
            self._pending = self._pending[self._pos :]
            self._pos = 0
        self._pending = self._pending + data if self._pending else data
        if self._busy is not None or self._output_blocked:
            # A command is waiting (disk, tarpit) or the client is not reading its replies: keep
            # the input, but stop reading when it piles up.
            if len(self._pending) - self._pos > MAX_HELD_INPUT:
                self._stop_reading()
            return
        self._process()

    def _process(self) -> None:
        self._processing = True
        try:
            self._process_input()
        finally:
            self._processing = False
            if self.transcript is not None:
                self.transcript.flush()
            if self._paused_transport:
                self._maybe_resume_reading()  # the held input was consumed: read again
            self.send_now()

    def _process_input(self) -> None:
        while self._busy is None and not self._closed and not self._output_blocked:
            data, pos = self._pending, self._pos
            if pos >= len(data):
                self._pending, self._pos = b"", 0
                if self._input_ended:
                    self._end_of_input()
                return
            if self._raw_handler is not None:
                self._pos = self._raw_handler(data, pos)
                continue
            newline = data.find(b"\n", pos)
            limit = self.line_limit_for(data[pos : pos + 4])
            if newline < 0:
                if self._discarding or len(data) - pos > limit:
                    self._discarding = True  # drop, keep nothing of an overlong line
                    self._pending, self._pos = b"", 0
                else:
                    self._pending, self._pos = data[pos:], 0
                if self._input_ended:
                    self._end_of_input()  # an unfinished line at EOF is never a command
                return
            self._pos = newline + 1
            if self._discarding:
                self._discarding = False
                self._guarded(self.line_too_long)
                continue
            end = newline
            while end > pos and data[end - 1] in (13, 0):
                end -= 1  # CRLF, and telnet's CR NUL (RFC 854) before it
            if end - pos + 2 > limit or newline - pos > limit:
                # The second test is the one an unfinished line gets above, so a line is too long
                # or not whatever TCP segments it came in (a run of CRs before the LF included).
                self._guarded(self.line_too_long)
                continue
            self._guarded(self._dispatch, data[pos:end])

    def _end_of_input(self) -> None:
        """The client half-closed and every complete command it sent has been answered."""
        if not self._closed:
            self.event("client closed", "end of input: every complete command answered, closing")
            self.close()

    def _dispatch(self, line: bytes) -> Any:
        """A tarpit persona answers every command only after a pause."""
        delay = self.profile.policies.tarpit_delay
        if delay:
            return task.deferLater(self.context.reactor_time(), delay, self.line_received, line)
        return self.line_received(line)

    def _guarded(self, handler: Callable[..., Any], *args: Any) -> None:
        """Run a handler; a Deferred result holds back later input until it fires."""
        try:
            result = handler(*args)
        except Exception:
            log.failure("{protocol} session {session} failed", protocol=self.protocol_name, session=self.session_id)
            self.internal_error()
            return
        if isinstance(result, defer.Deferred):
            self.wait_for(result)

    @property
    def waiting(self) -> bool:
        """A command's answer is not ready yet (disk, tarpit, a failed login's delay)."""
        return self._busy is not None

    def wait_for(self, deferred: defer.Deferred) -> None:
        """Hold input processing until `deferred` fires (replies stay in order)."""
        deferred.addErrback(self._failed)
        if self._closed:
            return
        self._busy = deferred
        deferred.addBoth(self._resume)

    def _failed(self, failure: Any) -> None:
        log.failure("{protocol} session {session} failed", failure, protocol=self.protocol_name, session=self.session_id)
        if not self._closed:
            self.internal_error()

    def _resume(self, _: object) -> None:
        self._busy = None
        if self.transcript is not None:
            self.transcript.flush()
        self._maybe_resume_reading()
        if not self._closed and not self._processing and not self._output_blocked:
            self._process()
        self.send_now()
