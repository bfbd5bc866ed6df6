"""The POP3 server (RFC 1939, 2449 CAPA, 2595 STLS, 3206 response codes, 5034 SASL).

States: AUTHORIZATION -> TRANSACTION -> UPDATE (only through QUIT). Deletions are marks until
QUIT; a dropped connection deletes nothing. One session per maildrop. Reply texts come from
the profile by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol

from . import auth
from .session import LineSession, ServerContext
from .store import StoredMessage, to_wire
from .masking import mask_line

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

#: Commands per state; anything else in that state is `wrong_state`.
_STATE_COMMANDS = {
    AUTHORIZATION: {"USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT"},
    TRANSACTION: {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"},
}
_ALL_COMMANDS = set().union(*_STATE_COMMANDS.values())

#: Messages up to this size are read in the reactor thread (see `POP3Session._send_message`).
INLINE_READ_LIMIT = 256 * 1024


@dataclass
class Maildrop:
    """The messages as they were when the session logged in, with deletion marks."""

    messages: list[StoredMessage]
    deleted: set[int]
    retrieved: set[int] = field(default_factory=set)

    def live(self) -> list[tuple[int, StoredMessage]]:
        return [(n, m) for n, m in enumerate(self.messages, start=1) if n not in self.deleted]

    def totals(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(m.size for _, m in live)


class POP3Session(LineSession):
    """One POP3 conversation."""

    protocol_name = "POP3"

    def __init__(self, context: ServerContext) -> None:
        super().__init__(context)
        self.state = AUTHORIZATION
        self.user: str | None = None
        self.address: str | None = None
        self.maildrop: Maildrop | None = None
        self.timestamp = ""
        self.exchange: auth.SASLExchange | None = None

    # --- LineSession hooks -------------------------------------------------------------------

    def line_limit(self) -> int:
        policies = self.profile.policies
        return policies.max_auth_line if self.exchange else policies.max_pop3_line

    def idle_timeout(self) -> float:
        return self.profile.policies.pop3_idle_timeout

    def session_started(self) -> None:
        self.timestamp = auth.new_challenge(self.profile.pop3_hostname).decode("ascii")
        self.reply("greeting", timestamp=self.timestamp)

    def apop_available(self) -> bool:
        return "{timestamp}" in self.profile.pop3_greeting

    def timed_out(self) -> None:
        self.reply("timeout")

    def line_too_long(self) -> None:
        self.record_client("<line over the limit, discarded>")
        self.exchange = None
        self.reply("line_too_long")

    def internal_error(self) -> None:
        self.exchange = None
        self.reply("quit_failed")

    def session_ended(self) -> None:
        if self.address is not None and self.maildrop is not None:
            self.context.store.unlock(self.address)
        self.maildrop = None

    def session_closing(self) -> None:
        if self.state != UPDATE:  # a QUIT still removing messages unlocks when it is done
            self.session_ended()

    def reply(self, key: str, **values: Any) -> None:
        self.send_lines(self.profile.pop3(key, **{**self.common_values(), **values}))
        if key in self.profile.pop3_close_after:
            self.close()

    def account_name(self) -> str | None:
        return self.address

    # --- dispatch ----------------------------------------------------------------------------

    def line_received(self, line: bytes) -> defer.Deferred | None:
        if self.exchange is not None:
            text = line.decode("utf-8", "replace")
            self.record_client(mask_line(text, in_sasl_exchange=True), text)
            return self._auth_step(self.exchange.respond(line.decode("ascii", "replace")))
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or "\0" in text:
            self.record_client(line.decode("utf-8", "replace"))
            self.reply("bad_characters")
            return None
        self.record_client(mask_line(text), text)
        verb, _, argument = text.strip().partition(" ")
        verb = verb.upper()
        if verb not in _ALL_COMMANDS or verb in self.profile.quirks.pop3_unimplemented:
            self.reply("unknown_command")
            return None
        argument = argument.strip()
        action = self.fault(verb, argument)
        if action is not None:
            return self.run_fault(action, lambda: self.dispatch(verb, argument))
        return self.dispatch(verb, argument)

    def dispatch(self, verb: str, argument: str) -> defer.Deferred | None:
        if verb not in _STATE_COMMANDS.get(self.state, set()):
            self.reply("wrong_state")
            return None
        return getattr(self, f"do_{verb}")(argument)

    # --- AUTHORIZATION -----------------------------------------------------------------------

    def _tls_gate(self) -> bool:
        if self.profile.policies.require_tls_for_auth and not self.tls_active:
            self.reply("tls_required")
            return False
        return True

    def do_USER(self, argument: str) -> None:  # noqa: N802
        if not argument:
            self.reply("user_syntax")
            return
        if not self._tls_gate():
            return
        if self.profile.find_account(argument) is None:
            self.user = None
            self.reply("user_unknown", user=argument)
            return
        self.user = argument
        self.reply("user_ok", user=argument)

    def do_PASS(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        if self.user is None:
            self.reply("pass_without_user")
            return None
        if not argument:
            self.reply("pass_syntax")
            return None
        from twisted.cred.credentials import UsernamePassword

        user, self.user = self.user, None
        return self._login(UsernamePassword(user, argument), user, "pass_ok", "pass_failed")

    def do_APOP(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        if not self.apop_available():
            self.reply("apop_unavailable")
            return None
        parts = argument.split()
        if len(parts) != 2 or len(parts[1]) != 32 or any(c not in "0123456789abcdefABCDEF" for c in parts[1]):
            self.reply("apop_syntax")
            return None
        if not self._tls_gate():
            return None
        creds = auth.APOPCredentials(self.timestamp, parts[0], parts[1])
        return self._login(creds, parts[0], "apop_ok", "apop_failed")

    def do_AUTH(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        mechanisms = self.profile.pop3_sasl_mechanisms(self.tls_active)
        if not argument:
            self.send_lines(self.profile.pop3("auth_mechanisms") + mechanisms + ["."])
            return None
        if not self._tls_gate():
            return None
        parts = argument.split()
        mechanism = parts[0].upper()
        if mechanism not in mechanisms or len(parts) > 2:
            self.reply("auth_unknown_mechanism", mechanism=parts[0])
            return None
        self.exchange = auth.SASLExchange(mechanism, self.profile.pop3_hostname)
        return self._auth_step(self.exchange.start(parts[1] if len(parts) > 1 else None))

    def _auth_step(self, step: auth.Step) -> defer.Deferred | None:
        if step.kind == "challenge":
            self.reply(step.reply, **step.values)
            return None
        self.exchange = None
        if step.kind == "error":
            self.reply(step.reply, **step.values)
            return None
        return self._login(step.creds, step.username, "auth_ok", "auth_failed")

    def _login(self, creds: object, user: str, ok_key: str, fail_key: str) -> defer.Deferred:
        d = auth.login(self.context.portal, creds)

        limits = self.context.limits
        policies = self.profile.policies

        def failed(failure: Any) -> None:
            failure.trap(UnauthorizedLogin)
            self.event("authentication failed", f"{user}: {failure.getErrorMessage()}", user=user)
            self.reply(fail_key, user=user)
            failures = limits.failed_auth("POP3", self.client_ip)
            if policies.max_auth_failures and failures >= policies.max_auth_failures:
                self.event("too many authentication failures", f"{failures} from {self.client_ip}")
                self.reply("too_many_auth_failures")
                self.close()

        def succeeded(address: str) -> defer.Deferred | None:
            limits.reset_auth_failures("POP3", self.client_ip)
            wait = limits.login_wait(address, self.context.now(), policies.login_delay)
            if wait > 0:
                self.event("login delayed", f"{address}: {wait:.0f} s to go", user=address)
                self.reply("login_delay", seconds=max(1, round(wait)), user=user)
                return None
            if not self.context.store.try_lock(address):
                self.event("maildrop in use", address, user=address)
                self.reply("in_use", user=user)
                return None
            self.address = address
            d2 = self.context.run_blocking(self._open_maildrop, address)

            def opened(messages: list[StoredMessage]) -> None:
                limits.logged_in(address, self.context.now())
                self.maildrop = Maildrop(messages, set())
                self.state = TRANSACTION
                count, size = self.maildrop.totals()
                self.event("authenticated", address, user=address)
                self.reply(ok_key, user=user, count=count, size=size)

            def unlock(failure: Any) -> Any:
                self.context.store.unlock(address)
                self.address = None
                return failure

            return d2.addCallbacks(opened, unlock)

        return d.addCallbacks(succeeded, failed)

    def _open_maildrop(self, address: str) -> list[StoredMessage]:
        """The maildrop at login; EXPIRE n (n > 0) first removes messages older than n days."""
        store = self.context.store
        days = self.profile.policies.expire_days
        messages = store.messages(address)
        if days > 0:
            import time as _time

            cutoff = _time.time() - days * 86400
            old = [m.uid for m in messages if m.path.stat().st_mtime < cutoff]
            if old:
                store.remove(address, old)
                messages = store.messages(address)
        return messages

    def do_STLS(self, argument: str) -> None:  # noqa: N802
        if self.tls_active:
            self.reply("stls_active")
            return
        if argument:
            self.reply("no_arguments", verb="STLS")
            return
        if self.context.tls_options is None or not self.profile.pop3_has("STLS", False):
            self.reply("stls_unavailable")
            return
        self.reply("stls_ok")
        self._pending, self._pos = b"", 0
        self.transport.startTLS(self.context.tls_options)
        self.tls_active = True
        self.user = None
        self.event("tls", "TLS started")

    def do_CAPA(self, argument: str) -> None:  # noqa: N802
        lines = self.profile.pop3_capa_lines(self.tls_active)
        if self.state == TRANSACTION:
            lines = [line for line in lines if line.split()[0].upper() not in ("STLS", "USER", "SASL")]
        self.send_lines(self.profile.pop3("capa") + lines + ["."])

    # --- TRANSACTION -------------------------------------------------------------------------

    def _message(self, argument: str) -> tuple[int, StoredMessage] | None:
        """Resolve a message number, replying with the reason when it cannot be used."""
        assert self.maildrop is not None
        count = len(self.maildrop.messages)
        if not argument.isdigit() or len(argument) > 10:
            self.reply("bad_number", argument=argument, count=count)
            return None
        number = int(argument)
        if number < 1 or number > count:
            self.reply("no_such_message", number=number, count=count)
            return None
        if number in self.maildrop.deleted:
            self.reply("message_deleted", number=number)
            return None
        return number, self.maildrop.messages[number - 1]

    def do_STAT(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.reply("no_arguments", verb="STAT")
            return
        assert self.maildrop is not None
        count, size = self.maildrop.totals()
        self.reply("stat", count=count, size=size)

    def do_LIST(self, argument: str) -> None:  # noqa: N802
        assert self.maildrop is not None
        if argument:
            found = self._message(argument)
            if found:
                self.reply("list_one", number=found[0], size=found[1].size)
            return
        count, size = self.maildrop.totals()
        lines = self.profile.pop3("list_header", count=count, size=size)
        lines += [f"{n} {m.size}" for n, m in self.maildrop.live()] + ["."]
        self.send_lines(lines)

    def do_UIDL(self, argument: str) -> None:  # noqa: N802
        assert self.maildrop is not None
        if argument:
            found = self._message(argument)
            if found:
                self.reply("uidl_one", number=found[0], uid=found[1].uid)
            return
        lines = self.profile.pop3("uidl_header")
        lines += [f"{n} {m.uid}" for n, m in self.maildrop.live()] + ["."]
        self.send_lines(lines)

    def do_RETR(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        found = self._message(argument)
        if not found:
            return None
        number, message = found
        assert self.maildrop is not None
        self.maildrop.retrieved.add(number)
        return self._send_message(message, "retr", number, None)

    def do_TOP(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        parts = argument.split()
        if len(parts) != 2 or not parts[1].isdigit():
            self.reply("top_syntax")
            return None
        found = self._message(parts[0])
        if not found:
            return None
        return self._send_message(found[1], "top", found[0], int(parts[1]))

    def _send_message(self, message: StoredMessage, key: str, number: int, body_lines: int | None) -> defer.Deferred | None:
        assert self.address is not None
        if message.size <= INLINE_READ_LIMIT:
            # A small file is read in the reactor thread: from the page cache that takes microseconds,
            # while a worker-thread round trip costs more than the read (it halved RETR throughput).
            try:
                content = self.context.store.read_message(self.address, message)
            except (KeyError, FileNotFoundError):
                self.reply("no_such_message", number=number, count=len(self.maildrop.messages) if self.maildrop else 0)
                return None
            self._write_message(content, message, key, number, body_lines)
            return None
        d = self.context.run_blocking(self.context.store.read_message, self.address, message)

        def send(content: bytes) -> None:
            self._write_message(content, message, key, number, body_lines)

        def missing(failure: Any) -> None:
            failure.trap(KeyError, FileNotFoundError)
            self.reply("no_such_message", number=number, count=len(self.maildrop.messages) if self.maildrop else 0)

        return d.addCallbacks(send, missing)

    def _write_message(self, content: bytes, message: StoredMessage, key: str, number: int, body_lines: int | None) -> None:
        if self._closed and not self.transport.connected:
            return
        if body_lines is not None:
            content = top_of(content, body_lines)
        head = self.profile.pop3(key, number=number, size=message.size)
        self.send_lines(head)
        self.transport.write(dot_stuff(content))
        if self.transcript is not None:
            self.transcript.server(f"<message {number}, {len(content)} octets>")
            self.transcript.server(".")

    def do_DELE(self, argument: str) -> None:  # noqa: N802
        found = self._message(argument)
        if found:
            assert self.maildrop is not None
            self.maildrop.deleted.add(found[0])
            self.reply("dele", number=found[0])

    def do_NOOP(self, argument: str) -> None:  # noqa: N802
        self.reply("noop")

    def do_RSET(self, argument: str) -> None:  # noqa: N802
        assert self.maildrop is not None
        self.maildrop.deleted.clear()
        count, size = self.maildrop.totals()
        self.reply("rset", count=count, size=size)

    def do_QUIT(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        if self.state != TRANSACTION or self.maildrop is None:
            self.reply("quit")
            self.close()
            return None
        self.state = UPDATE
        maildrop, address = self.maildrop, self.address
        assert address is not None
        doomed = set(maildrop.deleted)
        if self.profile.policies.expire_days == 0:
            doomed |= maildrop.retrieved  # EXPIRE 0: a retrieved message is gone after QUIT (RFC 2449 6.7)
        uids = [maildrop.messages[n - 1].uid for n in sorted(doomed)]
        d = self.context.run_blocking(self.context.store.remove, address, uids)

        def done(_: object) -> None:
            remaining = len(maildrop.messages) - len(doomed)
            if uids:
                self.event("messages deleted", f"{len(uids)} from {address}", count=len(uids))
            self.session_ended()  # UPDATE releases the maildrop lock (RFC 1939 6)
            self.reply("quit_update" if remaining else "quit_update_empty", remaining=remaining)
            self.close()

        def failed(failure: Any) -> None:
            failure.trap(OSError)
            self.session_ended()
            self.reply("quit_failed")
            self.close()

        return d.addCallbacks(done, failed)


def dot_stuff(content: bytes) -> bytes:
    """Multi-line body (RFC 1939 3): every line CRLF-ended and a leading '.' doubled, then '.'.

    Whatever endings `content` has (CRLF, bare LF, a mix): every line is framed the same way, so
    no line of a message can end the response early or pass for the next reply.
    """
    content = to_wire(content)
    if content.startswith(b"."):
        content = b"." + content
    content = content.replace(b"\r\n.", b"\r\n..")
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    return content + b".\r\n"


def top_of(content: bytes, body_lines: int) -> bytes:
    """Headers, the blank line, and the first `body_lines` lines of the body (RFC 1939 TOP)."""
    head, sep, body = content.partition(b"\r\n\r\n")
    if not sep:
        return content
    lines = body.split(b"\r\n")
    kept = b"\r\n".join(lines[:body_lines])
    if body_lines and kept and len(lines) > body_lines:
        kept += b"\r\n"
    return head + sep + kept


class POP3Factory(protocol.Factory):
    """Builds POP3 sessions that share one server context."""

    noisy = False

    def __init__(self, context: ServerContext, implicit_tls: bool = False) -> None:
        self.context = context
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: object) -> POP3Session:  # noqa: N802
        session = POP3Session(self.context)
        session.tls_active = self.implicit_tls
        session.factory = self
        return session
