"""The relay: a domain's outbound queue delivered to other domains over real SMTP.

What a real MTA does after `250 Ok: queued as`: look up the recipient domain's MX in the world's
DNS (RFC 5321 5.1: lowest preference first, the domain's own A record when there is no MX, a
null MX refuses mail per RFC 7505), open an SMTP session to it from the sending domain's own
address with Twisted's SMTP client (STARTTLS when offered, RFC 3207), and act on each reply:
2xx delivered, 5xx bounced now, 4xx and unreachable hosts retried with backoff (Postfix's
schedule, PROTOCOL-FACTS.md section 5) until the queue lifetime ends, then bounced. Bounces are
RFC 3464 reports (`dsn.py`) for the sender's mailbox.

Every relay session is transcribed and streamed to live views like a server session; the queue
entry keeps its attempts, next attempt and last error (`maillab world queue` shows them).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer, endpoints, error as net_error
from twisted.mail.smtp import ESMTPClient
from twisted.names import error as dns_error
from twisted.names import dns as dns_types
from twisted.python.failure import Failure

from ..session import ServerEvent, SessionLine, log
from ..store import MailStore
from ..transcripts import TranscriptWriter
from .clock import LabClock
from .dsn import RecipientStatus, build_dsn, status_of
from .worldfile import Domain, World

_relay_numbers = itertools.count(1)


@dataclass(frozen=True)
class Result:
    """One recipient's outcome in one attempt."""

    code: int  # the SMTP reply code; 0 when no server answered (DNS or connection failure)
    text: str  # the reply as the server sent it, or what went wrong
    command: str = ""  # what the reply answered: "RCPT TO", "MAIL FROM", "end of DATA"
    remote: str = ""  # "mx.sina.lab[127.0.0.3]"
    permanent: bool = False  # for code 0: a DNS answer that will not change (no such domain)

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def failed(self) -> bool:
        return 500 <= self.code < 600 or (self.code == 0 and self.permanent)

    @property
    def status(self) -> str:
        if self.code:
            return status_of(self.code, self.text.partition(" ")[2])
        return "5.4.4" if self.permanent else "4.4.1"


def strip_return_path(message: bytes) -> bytes:
    """RFC 5321 4.4: Return-Path is added at final delivery only; a relay removes a stale one."""
    while message[:12].lower() == b"return-path:":
        end = message.find(b"\n")
        if end < 0:
            return b""
        message = message[end + 1 :]
        while message[:1] in (b" ", b"\t"):  # folded continuation
            end = message.find(b"\n")
            message = message[end + 1 :] if end >= 0 else b""
    return message


def wire_data(message: bytes) -> bytes:
    """CRLF line endings and dot-stuffing (RFC 5321 4.5.2), ending with CRLF."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..")


class RelayClient(ESMTPClient):
    """Twisted's ESMTP client, recording every line and collecting each recipient's result."""

    requireTransportSecurity = False
    requireAuthentication = False
    heloFallback = True
    timeout = 60

    def __init__(
        self,
        *,
        identity: str,
        sender: str,
        recipients: list[str],
        data: bytes,
        remote: str,
        tls_context: Any,
        record: Callable[[str, str], None],
    ) -> None:
        super().__init__(secret=None, contextFactory=tls_context, identity=identity)
        self._sender: str | None = sender
        self._recipients = recipients
        self._data = wire_data(data)
        self._remote = remote
        self._record = record
        self.results: dict[str, Result] = {}
        self.finished: defer.Deferred = defer.Deferred()
        self.used_tls = False

    # -- transcript -----------------------------------------------------------------------

    def sendLine(self, line: bytes) -> None:  # noqa: N802 - twisted's name
        self._record("c", line.decode("utf-8", "replace"))
        super().sendLine(line)

    def lineReceived(self, line: bytes) -> Any:  # noqa: N802
        self._record("s", line.decode("utf-8", "replace"))
        return super().lineReceived(line)

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:  # noqa: N802
        self.used_tls = True
        super().esmtpState_starttls(code, resp)

    def smtpState_data(self, code: int, resp: bytes) -> None:  # noqa: N802
        self._record("c", f"<message, {len(self._data)} octets>")
        super().smtpState_data(code, resp)

    def transformChunk(self, chunk: bytes) -> bytes:  # noqa: N802
        """`wire_data` already made the message wire-ready (Twisted's own conversion splits
        `\\n.` across read chunks)."""
        self.resetTimeout()
        return chunk

    # -- the transaction ------------------------------------------------------------------

    def getMailFrom(self) -> str | None:  # noqa: N802
        sender, self._sender = self._sender, None  # one transaction, then QUIT
        return sender

    def getMailTo(self) -> list[str]:  # noqa: N802
        return self._recipients

    def getMailData(self) -> io.BytesIO:  # noqa: N802
        return io.BytesIO(self._data)

    def _reply(self, code: int, resp: bytes | str) -> str:
        text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else str(resp)
        return f"{code} " + " ".join(line.strip() for line in text.splitlines())

    def sentMail(self, code: int, resp: bytes, numOk: int, addresses: list, log: Any) -> None:  # noqa: N802
        refused_at_rcpt = {a.decode() if isinstance(a, bytes) else str(a) for a, c, _ in addresses if not 200 <= c < 300}
        for address, rcpt_code, rcpt_resp in addresses:
            address = address.decode() if isinstance(address, bytes) else str(address)
            if address in refused_at_rcpt:
                self.results[address] = Result(rcpt_code, self._reply(rcpt_code, rcpt_resp), "RCPT TO", self._remote)
        for address in self._recipients:
            if address in self.results:
                continue
            command = "end of DATA" if addresses else "MAIL FROM"
            self.results[address] = Result(code, self._reply(code, resp), command, self._remote)

    def sendError(self, exc: Any) -> None:  # noqa: N802
        code = getattr(exc, "code", -1)
        resp = getattr(exc, "resp", str(exc))
        for address in self._recipients:
            if address not in self.results:
                self.results[address] = Result(max(code, 0), self._reply(code, resp) if code > 0 else str(resp), "", self._remote)
        super().sendError(exc)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        super().connectionLost(reason)
        for address in self._recipients:
            if address not in self.results:
                self.results[address] = Result(0, f"lost connection with {self._remote} while talking to it", "", self._remote)
        if not self.finished.called:
            self.finished.callback(self.results)


class RelayAgent:
    """One domain's queue runner: delivers, retries and bounces what its server queued."""

    def __init__(
        self,
        *,
        world: World,
        domain: Domain,
        store: MailStore,
        clock: LabClock,
        resolver: Any,
        events: Any,
        transcripts_dir: Any,
        tls_context: Any = None,
        prepare: Callable[[bytes], bytes] | None = None,
        is_local_account: Callable[[str], bool] = lambda address: True,
        run_blocking: Callable[..., defer.Deferred] | None = None,
    ) -> None:
        self.world = world
        self.domain = domain
        self.store = store
        self.clock = clock
        self.reactor = clock.reactor
        self.resolver = resolver
        self.events = events
        self.transcripts_dir = transcripts_dir
        self.tls_context = tls_context
        self.prepare = prepare
        self.is_local_account = is_local_account
        self.run_blocking = run_blocking or (lambda f, *a: defer.maybeDeferred(f, *a))
        self.relay_port = world.relay_port
        self._busy: set[str] = set()
        self._scan_pending = False
        self._timer: Any = None
        self._running = False
        self._active: set[defer.Deferred] = set()

    # -- scheduling -----------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self.kick()

    def stop(self) -> defer.Deferred:
        """Stop scheduling; attempts under way finish (their replies are recorded)."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return defer.DeferredList(list(self._active), consumeErrors=True)

    def on_event(self, event: ServerEvent) -> None:
        """Subscribed to the domain's server events: an accepted message may be in the queue."""
        if event.kind == "message accepted":
            self.kick()

    def kick(self) -> None:
        """Look at the queue soon (once per reactor turn however many messages arrived)."""
        if self._running and not self._scan_pending:
            self._scan_pending = True
            self.reactor.callLater(0, self._scan)

    def _scan(self) -> None:
        self._scan_pending = False
        if not self._running:
            return
        now = self.clock.seconds()
        soonest: float | None = None
        for record in self.store.queued():
            if record["id"] in self._busy:
                continue
            due = float(record.get("next_attempt", 0))
            if due <= now:
                self._busy.add(record["id"])
                d = self._attempt(record)
                self._active.add(d)
                d.addBoth(self._attempt_done, record["id"], d)
            elif soonest is None or due < soonest:
                soonest = due
        if soonest is not None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = self.clock.call_after_lab(soonest - now, self.kick)

    def _attempt_done(self, result: Any, queue_id: str, d: defer.Deferred) -> None:
        self._busy.discard(queue_id)
        self._active.discard(d)
        if isinstance(result, Failure):
            log.failure("relay attempt failed", result)
        self.kick()

    # -- one attempt of one queue entry ---------------------------------------------------

    @defer.inlineCallbacks
    def _attempt(self, record: dict) -> Any:
        done = record.setdefault("done", {})
        pending = [r for r in record["recipients"] if r not in done]
        content = yield self.run_blocking(self.store.read_queued, record["id"])
        message = strip_return_path(content)
        if self.prepare is not None:
            message = yield self.run_blocking(self.prepare, message)
        by_domain: dict[str, list[str]] = {}
        for recipient in pending:
            by_domain.setdefault(recipient.rpartition("@")[2].lower(), []).append(recipient)
        outcomes = yield defer.gatherResults(
            [self._deliver_to_domain(name, rcpts, record["sender"], message) for name, rcpts in by_domain.items()]
        )
        results: dict[str, Result] = {}
        for outcome in outcomes:
            results.update(outcome)
        yield self._finish(record, results, content)

    @defer.inlineCallbacks
    def _mx_hosts(self, domain: str) -> Any:
        """[(preference, host)] in the order to try; [] for a null MX (RFC 7505)."""
        try:
            answers, _, _ = yield self.resolver.lookupMailExchange(domain)
        except dns_error.DNSNameError:
            raise
        mx = [(a.payload.preference, a.payload.name.name.decode("ascii")) for a in answers if a.type == dns_types.MX]
        if not mx:
            return [(0, domain)]  # RFC 5321 5.1: no MX, the domain's own address is the implicit MX
        if any(host in ("", ".") for _, host in mx):
            return []
        return sorted(mx)

    @defer.inlineCallbacks
    def _deliver_to_domain(self, domain: str, recipients: list[str], sender: str, message: bytes) -> Any:
        try:
            hosts = yield self._mx_hosts(domain)
        except dns_error.DNSNameError:
            text = f"Host or domain name not found. Name service error for name={domain} type=MX: Host not found"
            return {r: Result(0, text, permanent=True) for r in recipients}
        except Exception as problem:  # noqa: BLE001 - any other DNS trouble is temporary
            text = f"Host or domain name not found. Name service error for name={domain} type=MX: Host not found, try again ({problem.__class__.__name__})"
            return {r: Result(0, text) for r in recipients}
        if not hosts:
            text = f"Domain {domain} does not accept mail (nullMX)"
            return {r: Result(556, f"556 5.1.10 {text}", "", "", True) for r in recipients}
        last: dict[str, Result] = {}
        for _, host in hosts:
            try:
                address = yield self.resolver.getHostByName(host)
            except Exception:  # noqa: BLE001
                last = {r: Result(0, f"Host or domain name not found. Name service error for name={host} type=A: Host not found") for r in recipients}
                continue
            try:
                results = yield self._session(host, address, recipients, sender, message)
            except (net_error.ConnectError, defer.TimeoutError) as problem:
                reason = "Connection refused" if isinstance(problem, net_error.ConnectionRefusedError) else "Connection timed out"
                last = {r: Result(0, f"connect to {host}[{address}]:{self.relay_port}: {reason}", "", f"{host}[{address}]") for r in recipients}
                continue
            return results
        return last

    def _session(self, host: str, address: str, recipients: list[str], sender: str, message: bytes) -> defer.Deferred:
        """One SMTP session to one MX, transcribed under the sending domain's data."""
        session_id = f"relay-{self.domain.name}-{next(_relay_numbers)}"
        remote = f"{host}[{address}]"
        transcript = TranscriptWriter(self.transcripts_dir, session_id, "SMTP", f"{address}:{self.relay_port}", self.domain.persona)
        hub = self.events

        def record(direction: str, line: str) -> None:
            (transcript.client if direction == "c" else transcript.server)(line)
            transcript.flush()
            if hub.wants_lines:
                hub.publish_line(SessionLine("SMTP", session_id, remote, direction, line, line))

        client = RelayClient(
            identity=self.domain.smtp_host,
            sender=sender,
            recipients=recipients,
            data=message,
            remote=remote,
            tls_context=self.tls_context,
            record=record,
        )
        endpoint = endpoints.TCP4ClientEndpoint(
            self.reactor, address, self.relay_port, timeout=30, bindAddress=(self.domain.address, 0)
        )
        self._publish("relay session", remote, f"{sender or '<>'} -> {', '.join(recipients)}")
        d = endpoints.connectProtocol(endpoint, client)
        d.addCallback(lambda _: client.finished)

        def close(result: Any) -> Any:
            transcript.close()
            return result

        d.addBoth(close)
        return d

    # -- after the attempt ----------------------------------------------------------------

    def backoff(self, attempts: int) -> float:
        """Lab seconds before the next attempt: doubling from first_retry up to max_backoff."""
        return min(self.world.first_retry * 2 ** max(0, attempts - 1), self.world.max_backoff)

    @defer.inlineCallbacks
    def _finish(self, record: dict, results: dict[str, Result], content: bytes) -> Any:
        now = self.clock.seconds()
        record["attempts"] = int(record.get("attempts", 0)) + 1
        record["last_attempt"] = now
        done = record["done"]
        failed: list[RecipientStatus] = []
        deferred: list[str] = []
        # Lifetime counts in lab time from the first attempt (the store stamps real time).
        first = float(record.setdefault("first_attempt", now))
        expired = now - first >= self.world.queue_lifetime
        for recipient, result in results.items():
            host = result.remote.partition("[")[0]
            if result.delivered:
                done[recipient] = "delivered"
                self._publish("relayed", result.remote, f"{recipient}: {result.text}", id=record["id"], recipient=recipient)
            elif result.failed or expired:
                done[recipient] = "failed"
                failed.append(RecipientStatus(recipient, "failed", result.status, result.text, host, result.command))
                self._publish("bounced", result.remote, f"{recipient}: {result.text}", id=record["id"], recipient=recipient)
            else:
                deferred.append(recipient)
                record["last_error"] = f"{recipient}: {result.text}"
        if deferred:
            record["next_attempt"] = now + self.backoff(record["attempts"])
        if failed and record.get("sender"):
            yield self.run_blocking(self._bounce, record, failed, content, now)
            self._publish("bounce sent", "", f"to {record['sender']} for {', '.join(s.recipient for s in failed)}", id=record["id"])
        if deferred:
            yield self.run_blocking(self.store.update_queued, record)
            wait = record["next_attempt"] - now
            reason = record["last_error"].partition(": ")[2]
            self._publish("deferred", "", f"{', '.join(deferred)}: {reason}; next attempt in {wait:.0f} s", id=record["id"])
        else:
            yield self.run_blocking(self.store.remove_queued, record["id"])

    def _bounce(self, record: dict, failed: list[RecipientStatus], content: bytes, now: float) -> None:
        """The DSN goes to the sender's mailbox here, or into the queue for another domain."""
        sender = record["sender"]
        dsn = build_dsn(
            reporting_mta=self.domain.smtp_host,
            sender=sender,
            original=strip_return_path(content),
            statuses=failed,
            arrival=float(record.get("time", now)),
            now=now,
        )
        if sender.rpartition("@")[2].lower() == self.domain.name:
            if self.is_local_account(sender):
                self.store.deliver([sender], b"Return-Path: <>\r\n" + dsn)
        else:
            self.store.queue_outbound("", [sender], dsn)  # MAIL FROM:<>: a bounce is never bounced

    def _publish(self, kind: str, peer: str, detail: str, **fields: Any) -> None:
        self.events.publish(ServerEvent("RELAY", self.domain.name, kind, peer or self.domain.name, detail, fields))
