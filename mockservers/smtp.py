"""The SMTP server (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH,
ENHANCEDSTATUSCODES, DSN, CHUNKING, ETRN), one `do_VERB` method per command.

Every reply text comes from the profile by key; this module decides only *which* reply.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol

from . import auth
from .arrival import Arrival, Verdict
from .addresses import AddressSyntaxError, MissingBrackets, PathArgument, parse_path, split_keyword, valid_helo_argument
from .persona_rules import end_of_data_reply, helo_refused_at, missing_brackets_key
from .parameters import mail_parameter_problem, rcpt_parameter_problem, unstuff
from .rendering import render_smtp
from .session import LineSession, ServerContext, log
from .store import StoreError
from .masking import mask_line

#: Command grammar, beside the handlers, for HELP and for learners.
SYNTAX = {
    "HELO": "HELO <domain>",
    "EHLO": "EHLO <domain>",
    "MAIL": "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=<address>]",
    "RCPT": "RCPT TO:<address> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=rfc822;address]",
    "DATA": "DATA",
    "BDAT": "BDAT <octets> [LAST]",
    "RSET": "RSET",
    "NOOP": "NOOP [string]",
    "VRFY": "VRFY <user or address>",
    "EXPN": "EXPN <mailing list>",
    "HELP": "HELP [command]",
    "QUIT": "QUIT",
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH <PLAIN|LOGIN|CRAM-MD5> [initial-response]",
    "ETRN": "ETRN <domain> | @<domain> | #<queue>",
    "TURN": "TURN",
    "ATRN": "ATRN [domain[,domain...]]",
}

#: Commands a client may send before HELO/EHLO when the persona requires a greeting first.
_BEFORE_HELO = {"HELO", "EHLO", "NOOP", "RSET", "QUIT", "HELP", "VRFY", "EXPN", "TURN"}


class _AlreadyAnswered(Exception):
    """A check refused the message and its reply was sent: nothing more to say."""


@dataclass
class Envelope:
    """The mail transaction in progress: one MAIL, its accepted RCPTs, the message data."""

    sender: str
    params: dict[str, str | None]
    local: list[str] = field(default_factory=list)
    relay: list[str] = field(default_factory=list)
    rcpt_attempts: int = 0
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    too_big: bool = False
    bdat_used: bool = False
    bdat_failed: bool = False

    @property
    def recipients(self) -> list[str]:
        return self.local + self.relay


class SMTPSession(LineSession):
    """One SMTP conversation."""

    protocol_name = "SMTP"

    def __init__(self, context: ServerContext) -> None:
        super().__init__(context)
        self.helo: str | None = None
        self.esmtp = False
        self.authenticated_as: str | None = None
        self.envelope: Envelope | None = None
        self.exchange: auth.SASLExchange | None = None
        self._data_held = b""
        self._data_skip = 0
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_error: str | None = None

    # --- LineSession hooks -------------------------------------------------------------------

    def line_limit(self) -> int:
        policies = self.profile.policies
        return policies.max_auth_line if self.exchange else policies.max_command_line

    def line_limit_for(self, start: bytes) -> int:
        """MAIL lines may be longer: SIZE= adds 26 octets (RFC 1870 4), AUTH= adds 500 (RFC 4954 5)."""
        limit = self.line_limit()
        if self.exchange is None and start[:4].upper() == b"MAIL":
            limit += 526
        return limit

    def idle_timeout(self) -> float:
        return self.profile.policies.smtp_idle_timeout

    def session_started(self) -> None:
        self.reply("greeting")

    def timed_out(self) -> None:
        self.reply("timeout")

    def line_too_long(self) -> None:
        self.record_client("<line over the limit, discarded>")
        if self.exchange is not None:
            self.exchange = None
            self.reply("auth_line_too_long")
        else:
            self.reply("line_too_long")

    def internal_error(self) -> None:
        self.envelope = None
        self.exchange = None
        self._raw_handler = None
        self.reply("storage_failed")

    def reply(self, key: str, **values: Any) -> None:
        lines = self.profile.smtp(key, **{**self.common_values(), **values})
        self.send_lines(lines)
        if key in self.profile.smtp_close_after or lines[-1].startswith("421"):
            self.close()  # 421 always closes (RFC 5321 3.8); a persona may close after others

    def render_fault(self, lines: tuple[str, ...]) -> list[str]:
        return render_smtp(lines, self.profile.values(**self.common_values()))

    def account_name(self) -> str | None:
        return self.authenticated_as

    # --- dispatch ----------------------------------------------------------------------------

    def line_received(self, line: bytes) -> defer.Deferred | None:
        if self.exchange is not None:
            text = line.decode("utf-8", "replace")
            self.record_client(mask_line(text, in_sasl_exchange=True), text)
            return self.auth_line(line)
        if b"\0" in line:
            self.record_client(line.decode("utf-8", "replace"))
            self.reply("bad_characters")
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.record_client(line.decode("utf-8", "replace"))
            self.reply("bad_characters")
            return None
        self.record_client(mask_line(text), text)
        verb, _, argument = text.strip().partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"do_{verb}", None) if verb.isalpha() else None
        if handler is None or verb in self.profile.quirks.smtp_unimplemented:
            self.unknown_command()
            return None
        argument = argument.strip()
        if len(line) + 2 > self.profile.policies.max_command_line + self._length_allowance(verb, argument):
            self.reply("line_too_long")
            return None
        action = self.fault(verb, argument)
        if action is not None:
            return self.run_fault(action, lambda: self.dispatch(verb, handler, argument))
        return self.dispatch(verb, handler, argument)

    def _length_allowance(self, verb: str, argument: str) -> int:
        """Octets MAIL parameters add to the line limit: SIZE 26 (RFC 1870 4), AUTH= 500 (RFC 4954 5)."""
        if verb != "MAIL":
            return 0
        extensions = self.profile.smtp_extensions(self.tls_active)
        params = {token.partition("=")[0].upper() for token in argument.partition(">")[2].split()}
        return (26 if "SIZE" in params and "SIZE" in extensions else 0) + (
            500 if "AUTH" in params and "AUTH" in extensions else 0
        )

    def dispatch(self, verb: str, handler: Any, argument: str) -> defer.Deferred | None:
        if self.profile.policies.require_helo and self.helo is None and verb not in _BEFORE_HELO:
            self.reply("need_helo")
            return None
        return handler(argument)

    def unknown_command(self) -> None:
        self.reply("unknown_command")
        limit = self.profile.quirks.disconnect_after_unknown
        if limit:
            self.unknown_count = getattr(self, "unknown_count", 0) + 1
            if self.unknown_count >= limit:
                self.event("disconnected after unknown commands", f"{self.unknown_count} unknown commands")
                self.reply("too_many_errors")

    # --- greeting ----------------------------------------------------------------------------

    def helo_refused(self, name: str) -> bool:
        """Postfix's reject_non_fqdn_helo_hostname at HELO time (smtpd_delay_reject = no)."""
        if helo_refused_at(self.profile.policies, name, "helo"):
            self.reply("helo_not_fqdn", domain=name)
            return True
        return False

    def do_HELO(self, argument: str) -> None:  # noqa: N802
        if not valid_helo_argument(argument):
            self.reply("helo_syntax")
            return
        if self.helo_refused(argument):
            return
        self._greeted(argument, esmtp=False)
        self.reply("helo", client=argument, client_ip=self.client_ip)

    def do_EHLO(self, argument: str) -> None:  # noqa: N802
        if not valid_helo_argument(argument):
            self.reply("ehlo_syntax")
            return
        if self.helo_refused(argument):
            return
        self._greeted(argument, esmtp=True)
        self.send_lines(self.profile.ehlo_reply(self.tls_active, client=argument, **self.common_values()))

    def _greeted(self, name: str, esmtp: bool) -> None:
        """A new HELO/EHLO resets the transaction like RSET (RFC 5321 4.1.4)."""
        self.helo = name
        self.esmtp = esmtp
        self.envelope = None

    # --- simple commands ---------------------------------------------------------------------

    def do_NOOP(self, argument: str) -> None:  # noqa: N802
        self.reply("noop")

    def do_RSET(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.reply("no_arguments", verb="RSET")
            return
        self.envelope = None
        self.reply("rset")

    def do_QUIT(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.reply("no_arguments", verb="QUIT")
            return
        self.reply("quit")
        self.close()

    def do_HELP(self, argument: str) -> None:  # noqa: N802
        if not argument:
            self.reply("help", commands=" ".join(self.available_commands()))
            return
        topic = argument.split()[0].upper()
        if topic in SYNTAX and topic in self.available_commands():
            self.reply("help_topic", topic=topic, syntax=SYNTAX[topic])
        else:
            self.reply("help_unknown", topic=argument)

    def available_commands(self) -> list[str]:
        extensions = self.profile.smtp_extensions(self.tls_active)
        hidden = set()
        if "CHUNKING" not in extensions:
            hidden.add("BDAT")
        if "ETRN" not in extensions:
            hidden.add("ETRN")
        if not self.profile.smtp_auth_mechanisms(self.tls_active):
            hidden.add("AUTH")
        if "STARTTLS" not in extensions:
            hidden.add("STARTTLS")
        if not self.profile.policies.atrn:
            hidden.add("ATRN")
        hidden.add("TURN")
        return [verb for verb in SYNTAX if verb not in hidden]

    def do_TURN(self, argument: str) -> None:  # noqa: N802
        self.reply("turn_refused")

    def do_VRFY(self, argument: str) -> None:  # noqa: N802
        self._verify(argument, "vrfy", self.profile.policies.vrfy)

    def do_EXPN(self, argument: str) -> None:  # noqa: N802
        self._verify(argument, "expn", self.profile.policies.expn)

    def _verify(self, argument: str, kind: str, mode: str) -> None:
        if mode == "disabled":
            self.reply(f"{kind}_disabled")
            return
        if not argument:
            self.reply(f"{kind}_syntax")
            return
        address = argument.strip("<>").strip()
        if mode == "252":
            self.reply(f"{kind}_cannot", address=address)
            return
        account = self.profile.find_account(address)
        if account is None:
            self.reply(f"{kind}_unknown", address=address)
        else:
            self.reply(f"{kind}_ok", address=account.address)

    # --- STARTTLS ----------------------------------------------------------------------------

    def do_STARTTLS(self, argument: str) -> None:  # noqa: N802
        if self.tls_active:
            self.reply("tls_already")
            return
        if "STARTTLS" not in self.profile.smtp_extensions(False):
            self.reply("unknown_command")
            return
        if argument:
            self.reply("starttls_syntax")
            return
        if self.context.tls_options is None:
            self.reply("starttls_unavailable")
            return
        self.reply("starttls_ready")
        # Input pipelined after STARTTLS belongs to the plain-text session: discard it (RFC 3207 5).
        self._pending, self._pos = b"", 0
        self.transport.startTLS(self.context.tls_options)
        self.tls_active = True
        self.helo = None
        self.esmtp = False
        self.authenticated_as = None
        self.envelope = None
        self.event("tls", "TLS started")

    # --- AUTH --------------------------------------------------------------------------------

    def do_AUTH(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        policies = self.profile.policies
        if policies.require_tls_for_auth and not self.tls_active:
            self.reply("tls_required")
            return None
        mechanisms = self.profile.smtp_auth_mechanisms(self.tls_active)
        if not mechanisms:
            self.reply("auth_not_enabled")
            return None
        if (
            policies.max_auth_failures
            and policies.auth_failure_action == "refuse"
            and self.persona_auth_failures() >= policies.max_auth_failures
        ) or self.auth_locked_out():
            self.reply("auth_failures_refused")
            return None
        if self.authenticated_as is not None:
            self.reply("auth_already")
            return None
        if self.envelope is not None:
            self.reply("auth_in_transaction")
            return None
        parts = argument.split()
        if not parts or len(parts) > 2:
            self.reply("auth_syntax")
            return None
        mechanism = parts[0].upper()
        if mechanism not in mechanisms:
            self.reply("auth_unknown_mechanism", mechanism=parts[0])
            return None
        if mechanism in (m.upper() for m in policies.mechanisms_requiring_tls) and not self.tls_active:
            self.reply("auth_encryption_required", mechanism=mechanism)
            return None
        self.exchange = auth.SASLExchange(mechanism, self.profile.hostname)
        return self._auth_step(self.exchange.start(parts[1] if len(parts) > 1 else None))

    def auth_line(self, line: bytes) -> defer.Deferred | None:
        assert self.exchange is not None
        return self._auth_step(self.exchange.respond(line.decode("ascii", "replace")))

    def _auth_step(self, step: auth.Step) -> defer.Deferred | None:
        if step.kind == "challenge":
            self.reply(step.reply, **step.values)
            return None
        self.exchange = None
        if step.kind == "error":
            self.reply(step.reply, **step.values)
            return None
        if self.auth_locked_out():  # locked while the exchange went on: the secret is never checked
            self.reply("auth_failures_refused")
            return None
        d = auth.login(self.context.portal, step.creds)
        d.addCallbacks(self._auth_ok, self._auth_failed, errbackArgs=(step.username,))
        return d

    def _auth_ok(self, address: str) -> None:
        self.context.limits.auth_succeeded(self.client_ip, address)
        self.authenticated_as = address
        self.event("authenticated", address, user=address)
        self.reply("auth_ok", user=address)

    def _auth_failed(self, failure: Any, username: str) -> defer.Deferred | None:
        failure.trap(UnauthorizedLogin)
        reason = failure.getErrorMessage()
        pause = self.auth_failure_pause(username)
        if pause is None:
            self._answer_auth_failure(username, reason)
            return None
        return pause.addCallback(lambda _: self._answer_auth_failure(username, reason))

    def _answer_auth_failure(self, username: str, reason: str) -> None:
        if self._closed:
            return
        self.event("authentication failed", f"{username}: {reason}", user=username)
        self.reply("auth_failed", user=username)
        policies = self.profile.policies
        failures = self.persona_auth_failures()
        if policies.max_auth_failures and failures >= policies.max_auth_failures and policies.auth_failure_action == "disconnect":
            self.event("too many authentication failures", f"{failures} from {self.client_ip}")
            self.reply("too_many_errors")

    # --- the transaction ---------------------------------------------------------------------

    def _mail_gate(self) -> bool:
        policies = self.profile.policies
        if policies.require_tls_for_mail and not self.tls_active:
            self.reply("tls_required")
            return False
        if policies.require_auth_for_mail and self.authenticated_as is None:
            self.reply("auth_required")
            return False
        return True

    def do_MAIL(self, argument: str) -> None:  # noqa: N802
        if self.envelope is not None:
            self.reply("nested_mail")
            return
        if not self._mail_gate():
            return
        strict = self.profile.policies.strict_syntax
        split = split_keyword(argument, "FROM", strict=strict)
        if split is None:
            self.reply("mail_syntax")
            return
        try:
            path = parse_path(split[0], strict=strict, allow_null=True)
        except MissingBrackets as problem:
            self.reply(missing_brackets_key("MAIL"), reason=str(problem))
            return
        except AddressSyntaxError as problem:
            self.reply("bad_sender_syntax", reason=str(problem))
            return
        if not self._check_mail_params(path):
            return
        if (
            self.profile.policies.sender_must_match_auth
            and self.authenticated_as is not None
            and path.address.lower() != self.authenticated_as
        ):
            self.reply("sender_not_owned", address=path.address, user=self.authenticated_as)
            return
        self.envelope = Envelope(path.address, path.params)
        self.reply("mail_ok", address=path.address)

    def _check_mail_params(self, path: PathArgument) -> bool:
        extensions = self.profile.smtp_extensions(self.tls_active)
        for key, value in path.params.items():
            problem = mail_parameter_problem(key, value, extensions, self.profile.policies.max_message_size)
            if problem is not None:
                reply, values = problem
                self.reply(reply, **values)
                return False
        if path.non_ascii and "SMTPUTF8" not in path.params:
            self.reply("utf8_not_declared")
            return False
        return True

    def do_RCPT(self, argument: str) -> None:  # noqa: N802
        envelope = self.envelope
        if envelope is None:  # RFC 5321 3.3: sequence before syntax
            self.reply("need_mail")
            return
        strict = self.profile.policies.strict_syntax
        split = split_keyword(argument, "TO", strict=strict)
        if split is None:
            self.reply("rcpt_syntax")
            return
        envelope.rcpt_attempts += 1
        try:
            path = parse_path(split[0], strict=strict, allow_null=False, allow_postmaster=True)
        except MissingBrackets as problem:
            self.reply(missing_brackets_key("RCPT"), reason=str(problem))
            return
        except AddressSyntaxError as problem:
            self.reply("bad_recipient_syntax", reason=str(problem))
            return
        extensions = self.profile.smtp_extensions(self.tls_active)
        for key, value in path.params.items():
            problem = rcpt_parameter_problem(key, value, extensions)
            if problem is not None:
                self.reply(problem[0], **problem[1])
                return
        if path.non_ascii and "SMTPUTF8" not in envelope.params:
            self.reply("utf8_not_declared")
            return
        if len(envelope.recipients) >= self.profile.policies.max_recipients:
            self.reply("too_many_recipients", address=path.address)
            return
        if helo_refused_at(self.profile.policies, self.helo, "rcpt"):
            # Postfix, smtpd_delay_reject = yes: the HELO restrictions are evaluated now.
            self.reply("helo_not_fqdn", domain=self.helo)
            return
        address = path.address
        if "@" not in address or (address.lower().startswith("postmaster@") and self.profile.is_local_domain(path.domain)):
            # RFC 5321 4.5.1: every server MUST accept mail for its postmaster.
            local = address if "@" in address else f"postmaster@{self.profile.local_domains[0] if self.profile.local_domains else self.profile.hostname}"
            if self._greylisted(envelope, local):
                return
            if local.lower() not in envelope.local:
                envelope.local.append(local.lower())
            self.reply("rcpt_ok", address=address)
            return
        if self.profile.is_local_domain(path.domain):
            account = self.profile.find_account(address)
            if account is None:
                self.reply("unknown_user", address=address)
                return
            if self._greylisted(envelope, address):
                return
            if account.address not in envelope.local:
                envelope.local.append(account.address)
            self.reply("rcpt_ok", address=address)
            return
        relay = self.profile.policies.relay
        if (
            relay == "open"
            or path.domain in self.profile.relay_domains
            or (relay == "authenticated" and self.authenticated_as is not None)
        ):
            if self._greylisted(envelope, address):
                return
            if address.lower() not in envelope.relay:
                envelope.relay.append(address.lower())
            self.reply("rcpt_relay_ok", address=address)
            return
        self.event("relay denied", address, address=address)
        self.reply("relay_denied", address=address)

    def _greylisted(self, envelope: Envelope, address: str) -> bool:
        """First attempt of a (client, sender, recipient) triplet waits `greylist_delay` seconds."""
        delay = self.profile.policies.greylist_delay
        if not delay:
            return False
        wait = self.context.limits.greylisted(self.client_ip, envelope.sender, address, self.context.now(), delay)
        if wait <= 0:
            return False
        self.event("greylisted", f"{envelope.sender or '<>'} -> {address}, {wait:.0f} s to go")
        self.reply("greylisted", address=address, seconds=max(1, round(wait)))
        return True

    def _transaction_ready(self, verb: str) -> bool:
        envelope = self.envelope
        if envelope is None:
            self.reply("need_mail")
            return False
        if not envelope.recipients:
            self.reply("no_valid_recipients" if envelope.rcpt_attempts else "need_rcpt")
            return False
        return True

    def do_DATA(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.reply("no_arguments", verb="DATA")
            return
        if not self._transaction_ready("DATA"):
            return
        assert self.envelope is not None
        if self.envelope.bdat_used:
            self.reply("data_after_bdat")
            return
        self.reply("data_start")
        self._data_held = b"\r\n"  # the CRLF that ended the DATA line: a '.' line may follow at once
        self._data_skip = 2
        self._raw_handler = self._data_received

    def _data_received(self, data: bytes, pos: int) -> int:
        """Scan for CRLF.CRLF without splitting lines: bare LF never ends a message.

        `_data_held` keeps the last 4 octets of the previous chunk, where a terminator split across
        two TCP segments may begin; everything else is committed without copying twice.
        """
        held = self._data_held
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
        for chunk in self.envelope.chunks:
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
            envelope.chunks.clear()  # never hold more than the limit
            return
        envelope.chunks.append(chunk)

    def do_BDAT(self, argument: str) -> None:  # noqa: N802
        if "CHUNKING" not in self.profile.smtp_extensions(self.tls_active):
            self.reply("unknown_command")
            return
        match = re.fullmatch(r"(\d{1,18})(?: +(LAST))?", argument, re.IGNORECASE)
        if not match:
            self.reply("bdat_syntax")
            return
        size, last = int(match.group(1)), match.group(2) is not None
        error = None
        envelope = self.envelope
        if envelope is None:
            error = "need_mail"
        elif not envelope.recipients:
            error = "no_valid_recipients" if envelope.rcpt_attempts else "need_rcpt"
        elif envelope.bdat_failed:
            error = "bdat_after_failure"
        self._bdat_error = error
        self._bdat_remaining = size
        self._bdat_last = last
        if envelope is not None and error is None:
            envelope.bdat_used = True
        # RFC 3030 3: the chunk is read even when the command is refused.
        self._raw_handler = self._bdat_received
        if size == 0:
            self._raw_handler = None
            self._bdat_done()

    def _bdat_received(self, data: bytes, pos: int) -> int:
        take = min(self._bdat_remaining, len(data) - pos)
        if self._bdat_error is None:
            self._commit(data[pos : pos + take])
        self._bdat_remaining -= take
        if self._bdat_remaining == 0:
            self._raw_handler = None
            self._bdat_done()
        return pos + take

    def _bdat_done(self) -> None:
        envelope = self.envelope
        self.record_client(f"<BDAT chunk{' LAST' if self._bdat_last else ''}>")
        if self._bdat_error is not None:
            if envelope is not None and self._bdat_error != "need_mail":
                envelope.bdat_failed = True
            self.reply(self._bdat_error)
            return
        assert envelope is not None
        if envelope.too_big:
            envelope.bdat_failed = True
            self.reply("size_exceeded")
            return
        if self._bdat_last:
            self.wait_for(self._finish_message(dot_stuffed=False))
        else:
            self.reply("bdat_ok", size=envelope.size)

    def _finish_message(self, dot_stuffed: bool) -> defer.Deferred:
        envelope = self.envelope
        assert envelope is not None
        self.envelope = None
        if envelope.too_big:
            self.event("message refused", f"{envelope.size} octets over the {self.profile.policies.max_message_size} limit")
            self.reply("size_exceeded", size=envelope.size)
            return defer.succeed(None)
        action = self.fault("DATA-END", " ".join(envelope.recipients))
        if action is not None:
            if action.reply or action.drop:
                envelope.chunks.clear()  # the scripted reply replaces delivery
            return defer.maybeDeferred(self.run_fault, action, lambda: self._deliver(envelope, dot_stuffed))
        return self._deliver(envelope, dot_stuffed)

    def _deliver(self, envelope: Envelope, dot_stuffed: bool) -> defer.Deferred:
        content = b"".join(envelope.chunks)
        envelope.chunks.clear()
        if dot_stuffed:
            content = unstuff(content)
        reply_key = end_of_data_reply(self.profile.policies, envelope.params, not content.isascii())
        if reply_key == "undeclared_8bit":
            self.event("message refused", "8-bit data without BODY=8BITMIME")
            self.reply(reply_key)
            return defer.succeed(None)
        check = self.context.message_check
        if check is None:
            d = self.context.run_blocking(self._store, envelope, self.trace_headers(envelope) + content)
        else:
            # A world's MX checks the sender (SPF, DKIM, DMARC) off the reactor: it asks DNS.
            arrival = Arrival(self.client_ip, self.helo or "", envelope.sender, tuple(envelope.recipients), content)
            d = self.context.run_blocking(check, arrival)
            d.addCallback(self._checked, envelope, content)
        d.addCallbacks(self._stored, self._store_failed, callbackArgs=(envelope, len(content), reply_key))
        return d

    def _checked(self, verdict: Verdict, envelope: Envelope, content: bytes) -> Any:
        """Store with the check's headers, or refuse with the persona's reply for that failure."""
        if verdict.reject is not None:
            key, values = verdict.reject
            self.event("message refused", verdict.reason or key)
            self.reply(key, **values)
            raise _AlreadyAnswered()
        message = self.trace_headers(envelope) + verdict.headers + content
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

    def _stored(self, message_id: str, envelope: Envelope, size: int, reply_key: str = "data_ok") -> None:
        digest = hashlib.sha1(message_id.encode()).hexdigest()
        queue_id = digest[:10].upper()
        self.event(
            "message accepted",
            f"{envelope.sender or '<>'} -> {', '.join(envelope.recipients)} ({size} octets, id {queue_id})",
            sender=envelope.sender,
            recipients=envelope.recipients,
            size=size,
            id=message_id,
        )
        self.reply(reply_key, id=message_id, queue_id=queue_id, number=int(digest[:8], 16), size=size)

    def _store_failed(self, failure: Any, *_: Any) -> None:
        if failure.check(_AlreadyAnswered):
            return None
        error = failure.check(StoreError, OSError)
        if error is None:
            return failure
        log.failure("storing a message failed", failure)
        self.event("storage failed", failure.getErrorMessage())
        full = getattr(failure.value, "errno", None) in (28, 122)  # ENOSPC, EDQUOT
        self.reply("storage_full" if full else "storage_failed")
        return None

    def trace_headers(self, envelope: Envelope) -> bytes:
        """Return-Path and Received, as a real MTA adds them: learners see them in RETR."""
        with_ = "ESMTP" if self.esmtp else "SMTP"
        if self.tls_active:
            with_ += "S"
        if self.authenticated_as:
            with_ += "A"
        date = self.common_values()["date"]
        first = envelope.recipients[0]
        received = (
            f"Received: from {self.helo or 'unknown'} ({self.client_ip})\r\n"
            f"\tby {self.profile.hostname} (maillab {self.profile.name}) with {with_}\r\n"
            f"\tfor <{first}>; {date}\r\n"
        )
        return f"Return-Path: <{envelope.sender}>\r\n{received}".encode("utf-8")

    # --- ETRN / ATRN -------------------------------------------------------------------------

    def do_ETRN(self, argument: str) -> defer.Deferred | None:  # noqa: N802
        if "ETRN" not in self.profile.smtp_extensions(self.tls_active):
            self.reply("unknown_command")
            return None
        if self.envelope is not None:
            self.reply("transaction_in_progress")
            return None
        node = argument.strip()
        domain = node.lstrip("@#")
        if not node or " " in node or not domain:
            self.reply("etrn_syntax")
            return None
        d = self.context.run_blocking(self.context.store.queued_count, domain)

        def answer(count: int) -> None:
            if count == 0:
                self.reply("etrn_no_mail", node=node)
            else:
                self.reply("etrn_started", node=node, count=count)

        return d.addCallback(answer)

    def do_ATRN(self, argument: str) -> None:  # noqa: N802
        if not self.profile.policies.atrn:
            self.reply("atrn_refused")
            return
        if self.authenticated_as is None:
            self.reply("atrn_auth_required")
            return
        domains = [d for d in argument.replace(",", " ").split() if d] or [self.authenticated_as.rpartition("@")[2]]
        if not any(self.context.store.queued_count(d) for d in domains):
            self.reply("atrn_no_mail")
            return
        self.reply("atrn_unable")


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
