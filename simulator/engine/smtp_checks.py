"""Check one SMTP line: the protocol core decides, this module explains.

The server's answer is `mailprotocol.smtp` run on a shadow state built from the client-side
session (`shadow_state`); every reply a diagnostic shows is rendered from that decision, so it is
the mock server's own text. `SMTPCheck.run()` walks the steps a learner's line meets (framing,
verb, HELO gate, the verb's grammar, AUTH, DATA text) and says which mistake it is and how to fix
it; warnings and notes are advice the server would never give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mockservers.addresses import (
    MAX_LOCAL_PART,
    MAX_PATH,
    AddressSyntaxError,
    PathArgument,
    is_domain,
    is_mailbox,
    parse_path,
    split_keyword,
    valid_helo_argument,
)
from mailprotocol import pop3 as core_pop3
from mailprotocol import sasl as core_sasl
from mailprotocol import smtp as core
from mailprotocol.decision import Decision, Reply
from mockservers.parameters import mail_parameter_problem, rcpt_parameter_problem
from mockservers.persona_rules import end_of_data_reply, helo_refused_at, is_fqdn_helo, missing_brackets_key
from mockservers.rendering import render_smtp
from mockservers.sasl import b64encode_text

from mockservers.profile import Profile

from .checks import (
    IMPLEMENTED_MECHANISMS,
    LineCheck,
    check_login,
    common_values,
    describe_decoded,
    has_control_characters,
    logged_in_address,
    looks_like_base64_text,
    nearest_verb,
    sasl_respond,
    sasl_start,
)
from .data_checks import check_data_line, estimated_size
from .diagnostics import secret_kind
from .prediction import HOLE, Prediction
from .replies import looks_like_command

#: Host names learners may copy; the suggestion for a bad HELO/EHLO argument.
EXAMPLE_HELO = "client.example.com"

_SYNTAX_WITH_EXAMPLE = {"MAIL": "MAIL FROM:<{address}>", "RCPT": "RCPT TO:<{address}>"}


class SMTPCheck(LineCheck):
    protocol = "smtp"

    # --- rendering -----------------------------------------------------------------------------

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.state = shadow_state(self.session, self.profile)
        #: The server's decision for this line (None: no reply of its own, or not the core's to make).
        self.decision: core.SMTPDecision | None = None

    def render(self, key: str, values: dict[str, Any]) -> list[str]:
        """A reply's lines: the core's decision when it chose this key, so the text is the server's."""
        decided = self.decision.replies if self.decision is not None else ()
        chosen = next((reply for reply in decided if reply.key == key), None)
        if chosen is not None:
            return [line.replace(HOLE, "?") for line in self.reply_lines(chosen)]
        if key not in self.profile.smtp_replies:
            return []
        return self.profile.smtp(key, **{**common_values(self.client_ip), **values})

    def reply_lines(self, reply: Reply) -> list[str]:
        """The core's reply rendered by the persona; values only the live server knows are HOLE."""
        values = {name: HOLE if value is None else value for name, value in reply.values.items()}
        return core.render(self.profile, Reply(reply.key, values), self.state, common_values(self.client_ip))

    @property
    def reason(self) -> str:
        """Why the core refused this line ("" when it did not, or did not decide)."""
        return self.decision.reason if self.decision is not None else ""

    def prediction(self) -> Prediction | None:
        """The reply the server sends to this line: the core's decision, carried as far as a client
        can follow it (a greylisting persona delays a first attempt, an empty queue for ETRN, the
        reply a BDAT chunk gets). None when the line gets no reply of its own.
        """
        decision = self.decision
        if decision is None:
            return None
        policies = self.profile.policies
        if decision.effect(core.GREYLIST) is not None and policies.greylist_delay:
            decision = core.greylisted(decision, policies.greylist_delay)
        query = decision.effect(core.QUEUE_COUNT)
        if query is not None:
            decision = core.queue_answer(decision.state, query, 0)
        chunk = decision.effect(core.READ_CHUNK)
        if chunk is not None:
            decision = core.chunk_done(decision.state, chunk, False, None)  # type: ignore[arg-type]
            if not decision.replies:
                return self.end_of_message(decision.state)
        if not decision.replies:
            return None
        return Prediction(tuple(self.reply_lines(decision.replies[0])))

    def end_of_message(self, state: core.SMTPState, size: int | None = None) -> Prediction:
        """The reply to a complete message: 250 with the server's queue id, or this persona's refusal."""
        envelope = state.envelope
        params = envelope.params if envelope is not None else {}
        lines = self.session.message_lines
        counted = estimated_size(lines)  # what the server counts against the limit: as sent, dot-stuffed
        limit = self.policies.max_message_size
        if size is not None and limit and counted > limit:
            return Prediction(tuple(self.reply_lines(Reply("size_exceeded", {"size": counted}))))
        has_8bit = any(not text.isascii() for text in lines) if size is not None else False
        key = end_of_data_reply(self.policies, params, has_8bit)
        reply = Reply(key, {"id": None, "queue_id": None, "number": None, "size": size})
        return Prediction(tuple(self.reply_lines(reply)))

    def code_of(self, reply: list[str] | tuple[str, ...]) -> str:
        return reply[-1][:3]

    def render_fault(self, lines: tuple[str, ...]) -> list[str]:
        return render_smtp(lines, self.profile.values(**common_values(self.client_ip)))

    # --- the server's view of the session --------------------------------------------------------

    @property
    def policies(self) -> Any:
        return self.profile.policies

    @property
    def tls(self) -> bool:
        return bool(self.session.tls_active)

    @property
    def greeted(self) -> bool:
        return self.session.helo_domain is not None

    def account_now(self) -> str | None:
        return self.state.authenticated_as

    @property
    def extensions(self) -> frozenset[str]:
        return self.profile.smtp_extensions(self.tls)

    def strict(self) -> bool:
        return bool(self.policies.strict_syntax)

    def server_verb(self, text: str) -> tuple[str, str] | None:
        parsed = core.parse(core.SMTPState(tls=self.tls), self.profile, text)
        return None if isinstance(parsed, Decision) else (parsed.verb, parsed.argument)

    def recipient_key(self, address: str) -> str:
        return recipient_key(self.profile, address)

    # --- entry point ---------------------------------------------------------------------------

    def run(self) -> None:
        session = self.session
        if session.closed:
            self.add("session-closed", "error")
            return
        if session.tls_pending:
            self.add("tls-handshake-pending", "error")
            return
        if getattr(session, "reversed", False):
            self.add("session-reversed", "error")
            return
        if session.greeting is None:
            self.add("spoke-before-greeting", "warning")
        if session.data_mode:
            check_data_line(self)
            return
        if session.bdat_remaining:
            self.add("bdat-octets", "info", remaining=session.bdat_remaining)
            return
        if session.auth is not None and session.auth.awaiting_client:
            self.auth_line()
            return
        self.command()

    # --- a command line --------------------------------------------------------------------------

    def decide(self) -> Any:
        """The core's decision for a command line; the fault rule that fires for it, if any."""
        parsed = core.parse(self.state, self.profile, self.line)
        if isinstance(parsed, Decision):
            self.decision = parsed
            return None
        action = self.fault(parsed.verb, parsed.argument)
        if action is None or not (action.reply or action.drop):
            self.decision = core.dispatch(self.state, self.profile, parsed)
        return action

    def command(self) -> None:
        line = self.line
        action = self.decide()
        text = line.strip()
        verb_token, _, argument = text.partition(" ")
        verb = verb_token.upper()
        argument = argument.strip()
        octets = len(line.encode("utf-8", "surrogateescape"))
        limit = self.policies.max_command_line + core.length_allowance(self.state, self.profile, verb, argument)
        if octets + 2 > limit:
            self.add("line-too-long", "error", "line_too_long", length=octets + 2, limit=limit)
            return
        if "\0" in line:
            self.add("nul-character", "error", "bad_characters")
            return
        if line != line.lstrip() and text:
            self.add("leading-space", "warning", suggestion=line.strip())
        if not (verb.isalpha() and verb in core.VERB_NAMES) or verb in self.profile.quirks.smtp_unimplemented:
            self.unknown(verb_token, argument)
            return
        if action is not None and self.apply_fault(action, verb):
            return
        if not self.greeted and not core.VERB_TABLE[verb].before_helo:
            if self.policies.require_helo:
                self.add("need-helo", "error", "need_helo", suggestion=f"EHLO {EXAMPLE_HELO}", verb=verb)
            else:
                self.add("need-helo", "warning", verb=verb)
        getattr(self, f"check_{verb}")(argument)
        self.non_ascii(verb, argument)

    def unknown(self, verb_token: str, argument: str) -> None:
        verb = verb_token.upper()
        if not verb_token:
            self.add("empty-line", "error", "unknown_command")
            return
        if verb in self.profile.quirks.smtp_unimplemented and verb in core.VERB_NAMES:
            self.add("command-not-offered", "error", "unknown_command", verb=verb)
            self.count_unknown()
            return
        glued = re.match(r"^(MAIL|RCPT)[^A-Za-z]*(FROM|TO)\s*(:.*)?$", verb_token, re.IGNORECASE)
        letters = re.match(r"[A-Za-z]*", verb_token).group(0).upper()  # type: ignore[union-attr]
        if glued:
            fixed = f"{glued.group(1).upper()} {glued.group(2).upper()}{glued.group(3) or ':'}"
            self.add("verb-glued", "error", "unknown_command", suggestion=_join(fixed, argument), verb=verb_token)
        elif letters in core.VERB_NAMES and letters != verb:
            rest = verb_token[len(letters):].strip(" \t.,;:")
            self.add(
                "verb-separator", "error", "unknown_command",
                suggestion=_join(letters, (rest + " " + argument).strip()), verb=verb_token,
            )
        elif letters in core_pop3.VERB_NAMES - core.VERB_NAMES:
            self.add("pop3-command-in-smtp", "error", "unknown_command", verb=letters)
        else:
            candidates = [v for v in core.SUGGESTION_ORDER if self.offered(v)]
            near = nearest_verb(letters or verb, candidates)
            if near is not None:
                self.add("unknown-verb", "error", "unknown_command", suggestion=_join(near, argument), verb=verb_token, nearest=near)
            else:
                self.add("unknown-verb-no-guess", "error", "unknown_command", verb=verb_token)
        self.count_unknown()

    def offered(self, verb: str) -> bool:
        """The server implements the verb and this persona offers it."""
        if verb in self.profile.quirks.smtp_unimplemented:
            return False
        extensions = self.profile.smtp_extensions(self.tls)
        if verb == "BDAT":
            return "CHUNKING" in extensions
        if verb == "STARTTLS":
            return "STARTTLS" in self.profile.smtp_extensions(False) and not self.tls
        if verb == "ETRN":
            return "ETRN" in extensions
        if verb == "ATRN":
            return bool(self.policies.atrn)
        return verb != "TURN"

    def count_unknown(self) -> None:
        """A persona that hangs up after N unknown commands: the core's second reply says so."""
        if self.decision is not None and any(reply.key == "too_many_errors" for reply in self.decision.replies):
            limit = self.profile.quirks.disconnect_after_unknown
            self.add("too-many-unknown", "warning", reply=self.render("too_many_errors", {}), limit=limit)

    def non_ascii(self, verb: str, argument: str) -> None:
        if argument.isascii() or verb in ("MAIL", "RCPT"):
            return
        self.add("non-ascii-command", "warning", verb=verb)

    # --- greeting --------------------------------------------------------------------------------

    def check_HELO(self, argument: str) -> None:  # noqa: N802
        self.helo("HELO", argument)

    def check_EHLO(self, argument: str) -> None:  # noqa: N802
        self.helo("EHLO", argument)

    def helo(self, verb: str, argument: str) -> None:
        if not valid_helo_argument(argument):
            key = "helo_syntax" if verb == "HELO" else "ehlo_syntax"
            name = argument.split()[0] if argument else EXAMPLE_HELO
            self.add("helo-syntax", "error", key, suggestion=f"{verb} {name}", verb=verb)
            return
        literal = argument.startswith("[") and argument.endswith("]")
        valid = is_domain(argument.rstrip(".")) if not literal else is_domain(argument)
        fqdn = is_fqdn_helo(argument)
        suggestion = f"{verb} {EXAMPLE_HELO}"
        if helo_refused_at(self.policies, argument, "helo"):
            self.add("helo-not-fqdn", "error", "helo_not_fqdn", suggestion=suggestion, reply_values={"domain": argument}, name=argument)
        elif helo_refused_at(self.policies, argument, "rcpt"):
            # smtpd_delay_reject: accepted now, refused at every RCPT TO of this session.
            self.add("helo-not-fqdn-delayed", "warning", suggestion=suggestion, name=argument)
        elif not valid:
            self.add("helo-bad-domain", "warning", suggestion=suggestion, name=argument)
        elif not fqdn:
            self.add("helo-not-fqdn", "warning", suggestion=suggestion, name=argument)
        if verb == "HELO" and len(self.profile.smtp_capabilities) > 0:
            self.add("helo-no-extensions", "info", suggestion=f"EHLO {argument}")
        if self.session.mail_from is not None:
            self.add("helo-resets-transaction", "info", verb=verb)

    # --- simple commands ---------------------------------------------------------------------------

    def no_argument(self, verb: str, argument: str) -> bool:
        if argument:
            self.add("no-argument-expected", "error", "no_arguments", suggestion=verb, reply_values={"verb": verb}, verb=verb)
            return True
        return False

    def check_NOOP(self, argument: str) -> None:  # noqa: N802
        pass

    def check_RSET(self, argument: str) -> None:  # noqa: N802
        self.no_argument("RSET", argument)

    def check_QUIT(self, argument: str) -> None:  # noqa: N802
        if self.no_argument("QUIT", argument):
            return
        if self.session.mail_from is not None:
            self.add("quit-abandons-message", "info")

    def check_HELP(self, argument: str) -> None:  # noqa: N802
        if not argument:
            return
        topic = argument.split()[0].upper()
        available = core.available_commands(self.state, self.profile)
        if topic not in available:
            self.add("help-unknown-topic", "error", "help_unknown", reply_values={"topic": argument}, topic=argument)

    def check_TURN(self, argument: str) -> None:  # noqa: N802
        self.add("turn-obsolete", "error", "turn_refused")

    def check_VRFY(self, argument: str) -> None:  # noqa: N802
        self.verify("VRFY", argument)

    def check_EXPN(self, argument: str) -> None:  # noqa: N802
        self.verify("EXPN", argument)

    def verify(self, verb: str, argument: str) -> None:
        reason = self.reason
        kind = verb.lower()
        if reason == "verify-disabled":
            self.add("vrfy-disabled", "error", f"{kind}_disabled", verb=verb)
        elif reason == "verify-syntax":
            self.add("vrfy-syntax", "error", f"{kind}_syntax", suggestion=f"{verb} user@example.com", verb=verb)
        elif reason == "verify-unknown":
            address = argument.strip("<>").strip()
            self.add("vrfy-unknown", "error", f"{kind}_unknown", address=address)
        elif self.decision is not None and self.decision.replies[0].key == f"{kind}_cannot":
            self.add("vrfy-cannot", "info", verb=verb)

    # --- STARTTLS --------------------------------------------------------------------------------

    def check_STARTTLS(self, argument: str) -> None:  # noqa: N802
        reason = self.reason
        if reason == "tls-already":
            self.add("starttls-already", "error", "tls_already")
        elif reason == "not-advertised":
            self.add("command-not-offered", "error", "unknown_command", verb="STARTTLS")
        elif reason == "no-argument-expected":
            self.add("starttls-syntax", "error", "starttls_syntax", suggestion="STARTTLS")
        elif not self.decided:
            self.add("starttls-telnet", "info")

    # --- AUTH ------------------------------------------------------------------------------------

    def check_AUTH(self, argument: str) -> None:  # noqa: N802
        reason = self.reason
        mechanisms = self.profile.smtp_auth_mechanisms(self.tls)
        parts = argument.split()
        if reason == "auth-not-enabled":
            if not self.tls and self.profile.smtp_auth_mechanisms(True):
                self.add("auth-needs-tls", "error", "auth_not_enabled", suggestion="STARTTLS")
            else:
                self.add("auth-not-offered", "error", "auth_not_enabled")
        elif reason == "needs-tls":
            self.add("auth-needs-tls", "error", "tls_required", suggestion="STARTTLS")
        elif reason == "auth-failures-refused":
            self.add("auth-refused-after-failures", "error", "auth_failures_refused", limit=self.policies.max_auth_failures)
        elif reason == "auth-already":
            self.add("auth-already", "error", "auth_already")
        elif reason == "auth-in-transaction":
            self.add("auth-in-transaction", "error", "auth_in_transaction", suggestion="RSET")
        elif reason == "auth-syntax":
            self.add("auth-syntax", "error", "auth_syntax", suggestion=f"AUTH {mechanisms[0]}", offered=mechanisms)
        elif reason == "mechanism-not-offered":
            usable = [m for m in mechanisms if m in IMPLEMENTED_MECHANISMS] or mechanisms
            self.add("auth-mechanism-not-offered", "error", "auth_unknown_mechanism",
                     suggestion=f"AUTH {usable[0]}", mechanism=parts[0], offered=mechanisms)
        elif reason == "mechanism-needs-tls":
            self.add("auth-mechanism-needs-tls", "error", "auth_encryption_required", suggestion="STARTTLS", mechanism=parts[0].upper())
        elif parts and not self.decided:
            self.auth_started(parts, mechanisms)

    def auth_started(self, parts: list[str], mechanisms: list[str]) -> None:
        """`AUTH mechanism [initial-response]` that the server takes up: explain what comes of it."""
        mechanism = parts[0].upper()
        if not self.session.esmtp:
            self.add("auth-after-helo", "warning")
        if self.reason == "auth-mechanism-unsupported":
            usable = [m for m in mechanisms if m in IMPLEMENTED_MECHANISMS]
            self.add("auth-mechanism-unsupported", "error", "auth_unknown_mechanism",
                     suggestion=f"AUTH {usable[0]}" if usable else None, mechanism=mechanism)
            return
        initial = parts[1] if len(parts) > 1 else None
        outcome = sasl_start(mechanism, initial, None)
        if outcome.kind != "challenge" or initial is not None:
            self.sasl_outcome(outcome, mechanism, initial or "")
        if not self.tls and mechanism in ("PLAIN", "LOGIN") and not self.decided:
            self.add("auth-cleartext", "info")

    def auth_line(self) -> None:
        exchange = self.session.auth
        line = self.line
        octets = len(line.encode("utf-8", "surrogateescape"))
        if octets + 2 > self.policies.max_auth_line:
            self.decision = core.line_too_long(self.state)
            self.add("line-too-long", "error", "auth_line_too_long", length=octets + 2, limit=self.policies.max_auth_line)
            return
        self.decision = core.auth_line(self.state, self.profile, line)
        mechanism = exchange.mechanism
        if mechanism not in IMPLEMENTED_MECHANISMS:
            return
        outcome = sasl_respond(mechanism, line, username=exchange.username or None, challenge=exchange.challenge)
        self.sasl_outcome(outcome, mechanism, line)

    def sasl_outcome(self, outcome: Any, mechanism: str, line: str) -> None:
        """Turn the server's decision on an AUTH line into diagnostics (shared shape with POP3)."""
        explain_sasl_outcome(self, outcome, mechanism, line, fail_key="auth_failed")

    # --- the transaction -------------------------------------------------------------------------

    def check_MAIL(self, argument: str) -> None:  # noqa: N802
        session = self.session
        policies = self.policies
        if session.mail_from is not None:
            self.add("nested-mail", "error", "nested_mail", suggestion="RSET")
        elif policies.require_auth_for_mail and not session.authenticated:
            mechanisms = self.profile.smtp_auth_mechanisms(self.tls)
            suggestion = f"AUTH {mechanisms[0]}" if mechanisms else ("STARTTLS" if "STARTTLS" in self.extensions else None)
            self.add("need-auth", "error", "auth_required", suggestion=suggestion)
        path = self.path("MAIL", "FROM", argument, allow_null=True)
        if path is None:
            return
        if not self.mail_parameters(path):
            return
        if path.non_ascii and "SMTPUTF8" not in path.params:
            self.utf8_not_declared("MAIL", argument)
            return
        account = self.account_now()
        if policies.sender_must_match_auth and account is not None and path.address.lower() != account:
            self.add("sender-not-owned", "error", "sender_not_owned",
                     suggestion=f"MAIL FROM:<{account}>",
                     reply_values={"address": path.address, "user": account}, address=path.address, user=account)
            return
        if path.address == "" and not self.decided:
            self.add("null-sender", "info")
        if path.params and not session.esmtp and not self.decided:
            self.add("parameters-after-helo", "warning")

    def check_RCPT(self, argument: str) -> None:  # noqa: N802
        session = self.session
        envelope = self.state.envelope
        if envelope is None:
            # RFC 5321 3.3: RCPT without a previous MAIL MUST get 503, whatever its syntax.
            self.add("rcpt-before-mail", "error", "need_mail", suggestion=f"MAIL FROM:<{self.sender_example()}>")
        split = split_keyword(argument, "TO", strict=self.strict())
        if split is None:
            self.path("RCPT", "TO", argument, allow_null=False)
            return
        if re.fullmatch(r"<postmaster>", split[0].strip(), re.IGNORECASE):
            # RFC 5321 4.1.1.3 / 4.5.1: `RCPT TO:<Postmaster>` without a domain MUST be accepted.
            if envelope is not None:
                self.add("rcpt-postmaster", "info")
            return
        path = self.path("RCPT", "TO", argument, allow_null=False)
        if path is None or envelope is None:
            return
        extensions = self.extensions
        for key, value in path.params.items():
            problem = rcpt_parameter_problem(key, value, extensions)
            if problem is not None:
                self.parameter_problem(problem, key, value, "RCPT")
                return
        if path.non_ascii and "SMTPUTF8" not in envelope.params:
            self.utf8_not_declared("RCPT", argument)
            return
        if len(envelope.recipients) >= self.policies.max_recipients:
            self.add("too-many-recipients", "error", "too_many_recipients",
                     reply_values={"address": path.address}, limit=self.policies.max_recipients)
            return
        helo = session.helo_domain
        if helo_refused_at(self.policies, helo, "rcpt"):
            self.add("rcpt-helo-not-fqdn", "error", "helo_not_fqdn", suggestion=f"EHLO {EXAMPLE_HELO}",
                     reply_values={"domain": helo}, name=helo)
            return
        address = path.address
        local = self.profile.is_local_domain(path.domain)
        if local and address.rpartition("@")[0].lower() == "postmaster":
            # RFC 5321 4.5.1: every domain a server delivers for has a postmaster mailbox.
            self.add("rcpt-postmaster", "info")
            return
        if local and self.profile.find_account(address) is None:
            self.add("rcpt-unknown-user", "error", "unknown_user", reply_values={"address": address}, address=address)
            return
        relay = self.policies.relay
        if not local and not (
            relay == "open"
            or path.domain in self.profile.relay_domains
            or (relay == "authenticated" and session.authenticated)
        ):
            self.add("rcpt-relay-denied", "error", "relay_denied", reply_values={"address": address}, address=address, domain=path.domain)
            return
        if self.policies.greylist_delay:
            self.add("greylisted", "error", "greylisted",
                     reply_values={"address": address, "seconds": round(self.policies.greylist_delay)},
                     seconds=round(self.policies.greylist_delay))
            return
        if self.recipient_key(address) in envelope.recipients:
            self.add("rcpt-duplicate", "info", address=address)
        elif not local:
            self.add("rcpt-relay", "info", domain=path.domain)

    def sender_example(self) -> str:
        account = self.account_now()
        if account:
            return account
        return self.profile.accounts[0].address if self.profile.accounts else "you@example.com"

    def path(self, verb: str, keyword: str, argument: str, *, allow_null: bool) -> PathArgument | None:
        """`MAIL FROM:` / `RCPT TO:` grammar, strict or lenient as the persona is."""
        strict = self.strict()
        low = verb.lower()
        syntax_key = "mail_syntax" if verb == "MAIL" else "rcpt_syntax"
        address_key = "bad_sender_syntax" if verb == "MAIL" else "bad_recipient_syntax"
        example = _SYNTAX_WITH_EXAMPLE[verb].format(address=self.guess_address(argument) or "user@example.com")
        before = re.match(rf"^{keyword}(\s+):", argument, re.IGNORECASE)
        after = re.match(rf"^{keyword}\s*:(\s+)", argument, re.IGNORECASE)
        split = split_keyword(argument, keyword, strict=strict)
        fixed = self.fixed_line(verb, keyword, argument)
        if split is None:
            if not re.match(rf"^{keyword}\s*:", argument, re.IGNORECASE):
                self.add(f"{low}-missing-keyword", "error", syntax_key, suggestion=example, keyword=f"{keyword}:")
            elif before:
                self.add(f"{low}-space-before-colon", "error", syntax_key, suggestion=fixed, keyword=keyword)
            else:
                self.add(f"{low}-space-after-colon", "error", syntax_key, suggestion=fixed, keyword=keyword)
            return None
        if not strict and before:
            self.add(f"{low}-space-before-colon", "warning", suggestion=fixed, keyword=keyword)
        if not strict and after:
            self.add(f"{low}-space-after-colon", "warning", suggestion=fixed, keyword=keyword)
        rest = split[0]
        try:
            path = parse_path(rest, strict=strict, allow_null=allow_null)
        except AddressSyntaxError as problem:
            self.address_problem(verb, rest, str(problem), address_key, example, fixed)
            return None
        if not path.bracketed:
            self.add(f"{low}-missing-brackets", "info", suggestion=fixed, keyword=keyword)
        if path.source_route:
            self.add("source-route", "warning")
        return path

    def guess_address(self, argument: str) -> str | None:
        match = re.search(r"[^\s<>:]+@[^\s<>]+", argument)
        return match.group(0) if match else None

    def fixed_line(self, verb: str, keyword: str, argument: str) -> str:
        """The line as RFC 5321 writes it: `MAIL FROM:<address> params`."""
        match = re.match(rf"^{keyword}\s*:\s*(.*)$", argument, re.IGNORECASE | re.DOTALL)
        rest = match.group(1).strip() if match else argument
        if rest.startswith("<") and ">" in rest:
            address, _, tail = rest[1:].partition(">")
        else:
            address, _, tail = rest.partition(" ")
            address = address.strip("<>")
        tail = tail.strip()
        if not address and verb == "RCPT":
            address = "user@example.com"
        return f"{verb} {keyword}:<{address}>" + (f" {tail}" if tail else "")

    def address_problem(self, verb: str, rest: str, reason: str, key: str, example: str, fixed: str) -> None:
        low = verb.lower()
        values = {"reason": reason}
        if not rest.strip() or rest.strip() == "<>":
            self.add(f"{low}-empty-address", "error", key, suggestion=example, reply_values=values)
        elif rest.startswith("<") and ">" not in rest:
            self.add("address-unclosed-bracket", "error", key, suggestion=fixed, reply_values=values)
        elif not rest.startswith("<") and self.strict():
            self.add(f"{low}-missing-brackets", "error", missing_brackets_key(verb), suggestion=fixed, reply_values=values, keyword="FROM" if verb == "MAIL" else "TO")
        elif reason.startswith("parameters must be separated"):
            self.add("parameters-not-separated", "error", key, suggestion=fixed.replace(">", "> ", 1) if "> " not in fixed else fixed, reply_values=values)
        elif reason.startswith("malformed parameter") or reason.startswith("parameter "):
            self.add("parameter-malformed", "error", key, reply_values=values, reason=reason)
        elif reason.startswith("empty address") or reason.startswith("no address"):
            self.add(f"{low}-empty-address", "error", key, suggestion=example, reply_values=values)
        elif reason.startswith("path longer"):
            self.add("path-too-long", "error", key, reply_values=values, limit=MAX_PATH)
        elif reason.startswith("malformed source route"):
            self.add("source-route-malformed", "error", key, reply_values=values)
        else:
            inner = rest[1:].partition(">")[0] if rest.startswith("<") else rest.partition(" ")[0]
            self.add(self.mailbox_problem(inner), "error", key, reply_values=values, address=inner)

    @staticmethod
    def mailbox_problem(address: str) -> str:
        local, at, domain = address.rpartition("@")
        if not at or not local:
            return "address-no-at"
        if len(local.encode("utf-8")) > MAX_LOCAL_PART:
            return "address-local-part-too-long"
        if not domain or not is_domain(domain):
            return "address-bad-domain"
        if not is_mailbox(address):
            return "address-bad-local-part"
        return "address-invalid"

    def mail_parameters(self, path: PathArgument) -> bool:
        extensions = self.extensions
        for key, value in path.params.items():
            problem = mail_parameter_problem(key, value, extensions, self.policies.max_message_size)
            if problem is not None:
                self.parameter_problem(problem, key, value, "MAIL")
                return False
        return True

    def parameter_problem(self, problem: tuple[str, dict[str, Any]], key: str, value: str | None, verb: str) -> None:
        reply_key, values = problem
        option = f"{key}={value}" if value is not None else key
        if reply_key == "size_exceeded_declared":
            self.add("param-size-exceeded", "error", reply_key, reply_values=dict(values),
                     size=value, limit=self.policies.max_message_size)
        elif reply_key == "bad_parameter":
            parameter = values.get("parameter", key)
            self.add(f"param-{parameter.lower()}-syntax", "error", reply_key, reply_values=dict(values), option=option)
        elif key == "BODY" and (value or "").upper() == "BINARYMIME":
            self.add("param-body-binarymime", "error", reply_key, reply_values=dict(values), option=option)
        else:
            extension = _EXTENSION_OF.get(key)
            if extension is not None and extension not in self.extensions:
                self.add("param-not-advertised", "error", reply_key, reply_values=dict(values),
                         option=option, extension=extension, verb=verb)
            else:
                self.add("param-unknown", "error", reply_key, reply_values=dict(values), option=option, verb=verb)

    def utf8_not_declared(self, verb: str, argument: str) -> None:
        if "SMTPUTF8" in self.extensions:
            suggestion = None
            if verb == "MAIL":
                suggestion = self.fixed_line("MAIL", "FROM", argument) + " SMTPUTF8"
            self.add("utf8-not-declared", "error", "utf8_not_declared", suggestion=suggestion)
        else:
            self.add("utf8-not-supported", "error", "utf8_not_declared")

    def check_DATA(self, argument: str) -> None:  # noqa: N802
        reason = self.reason
        if reason == "no-argument-expected":
            self.add("no-argument-expected", "error", "no_arguments", suggestion="DATA", verb="DATA")
        elif reason == "needs-mail":
            self.add("data-before-mail", "error", "need_mail", suggestion=f"MAIL FROM:<{self.sender_example()}>")
        elif reason == "no-valid-recipients":
            self.add("data-no-valid-recipients", "error", "no_valid_recipients")
        elif reason == "needs-rcpt":
            self.add("data-before-rcpt", "error", "need_rcpt", suggestion="RCPT TO:<user@example.com>")
        elif reason == "data-after-bdat":
            self.add("data-after-bdat", "error", "data_after_bdat")
        elif not self.decided:
            self.add("data-start", "info")

    def check_BDAT(self, argument: str) -> None:  # noqa: N802
        if self.reason == "not-advertised":
            self.add("command-not-offered", "error", "unknown_command", verb="BDAT")
            return
        if self.reason == "bdat-syntax":
            self.add("bdat-syntax", "error", "bdat_syntax", suggestion="BDAT 100 LAST")
            return
        chunk = self.decision.effect(core.READ_CHUNK) if self.decision is not None else None
        error = chunk["error"] if chunk is not None else None
        if error == "need_mail":
            self.add("bdat-before-mail", "error", "need_mail")
        elif error == "no_valid_recipients":
            self.add("data-no-valid-recipients", "error", "no_valid_recipients")
        elif error == "need_rcpt":
            self.add("bdat-before-rcpt", "error", "need_rcpt")
        elif error == "bdat_after_failure":
            self.add("bdat-after-failure", "error", "bdat_after_failure", suggestion="RSET")
        self.add("bdat-chunk", "info", size=argument.split()[0])

    # --- ETRN / ATRN -------------------------------------------------------------------------------

    def check_ETRN(self, argument: str) -> None:  # noqa: N802
        reason = self.reason
        if reason == "not-advertised":
            self.add("command-not-offered", "error", "unknown_command", verb="ETRN")
        elif reason == "transaction-in-progress":
            self.add("etrn-in-transaction", "error", "transaction_in_progress", suggestion="RSET")
        elif reason == "etrn-syntax":
            self.add("etrn-syntax", "error", "etrn_syntax", suggestion="ETRN example.com")

    def check_ATRN(self, argument: str) -> None:  # noqa: N802
        if self.reason == "atrn-refused":
            self.add("atrn-refused", "error", "atrn_refused")
        elif self.reason == "needs-auth":
            self.add("atrn-needs-auth", "error", "atrn_auth_required")
        else:
            self.add("atrn-no-mail", "error", "atrn_no_mail")


def recipient_key(profile: Profile, address: str) -> str:
    """How the server keeps a recipient: the account's address for a local user, else lower case."""
    domain = address.rpartition("@")[2].lower()
    if profile.is_local_domain(domain):
        account = profile.find_account(address)
        if account is not None:
            return account.address
    return address.lower()


def shadow_state(session: Any, profile: Profile) -> core.SMTPState:
    """The server's state as the client can know it, for the core to decide on."""
    tls = bool(session.tls_active)
    blank = core.SMTPState(tls=tls)
    envelope = None
    unknown = 0
    for exchange in session.history:
        if exchange.kind == "command" and exchange.sent is not None:
            token = exchange.sent.strip().partition(" ")[0].upper()
            if not (token.isalpha() and token in core.VERB_NAMES) or token in profile.quirks.smtp_unimplemented:
                unknown += 1
    if session.mail_from is not None:
        recipients = tuple(dict.fromkeys(recipient_key(profile, address) for address in session.recipients))
        attempts = 0
        for exchange in reversed(session.history):
            if exchange.kind != "command" or exchange.sent is None:
                continue
            parsed = core.parse(blank, profile, exchange.sent)
            if isinstance(parsed, Decision):
                continue
            if parsed.verb == "MAIL" and getattr(exchange.reply, "code", None) == "250":
                break
            if parsed.verb == "RCPT" and split_keyword(parsed.argument, "TO", strict=profile.policies.strict_syntax) is not None:
                attempts += 1
        chunking = "CHUNKING" in profile.smtp_extensions(tls)  # without it BDAT was an unknown command
        envelope = core.Envelope(
            session.mail_from, dict(session.mail_params), recipients, (), attempts,
            bdat_used=bool(session.bdat_open) and chunking, bdat_failed=bool(session.bdat_failed) and chunking,
        )
    exchange_state = None
    if session.auth is not None and session.auth.awaiting_client:
        auth = session.auth
        exchange_state = core_sasl.Exchange(auth.mechanism, auth.username or None, (auth.challenge or "").encode("utf-8"))
    account = None
    if session.authenticated:
        account = logged_in_address(profile, session.authenticated_user) or ((session.authenticated_user or "").strip().lower() or None)
    return core.SMTPState(
        tls=tls,
        helo=session.helo_domain,
        esmtp=bool(session.esmtp),
        authenticated_as=account,
        envelope=envelope,
        exchange=exchange_state,
        unknown_count=unknown,
        auth_failures=session.auth_failures,
    )


_EXTENSION_OF = {
    "SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8", "RET": "DSN", "ENVID": "DSN",
    "AUTH": "AUTH", "NOTIFY": "DSN", "ORCPT": "DSN",
}


def _join(verb: str, argument: str) -> str:
    return f"{verb} {argument}".strip()


# --- AUTH lines, both protocols -----------------------------------------------------------------


def explain_sasl_outcome(
    check: LineCheck,
    outcome: Any,
    mechanism: str,
    line: str,
    *,
    fail_key: str,
) -> None:
    """Diagnostics for one AUTH line (or initial response) after the server's decision."""
    profile = check.profile
    decoded_text = describe_decoded(outcome.decoded)
    if check.session.auth is not None and looks_like_command(line):
        check.add("auth-command-typed", "warning")
    if outcome.kind == "error":
        values = dict(outcome.values)
        diagnostic = outcome.diagnostic
        if diagnostic == "auth-cancel":
            check.add("auth-cancel", "info", outcome.key)
            return
        if diagnostic == "auth-not-base64":
            stripped = line.strip()
            suggestion = b64encode_text(stripped) if stripped else None
            if mechanism == "PLAIN" and "@" in stripped:
                suggestion = None
            check.add("auth-not-base64", "error", outcome.key, suggestion=suggestion, typed=stripped)
            return
        if diagnostic == "auth-plain-no-nul":
            count = (outcome.decoded or b"").count(b"\0")
            check.add(diagnostic, "error", outcome.key, reply_values=values, decoded=decoded_text, count=count)
            return
        if diagnostic == "auth-mechanism-unsupported":
            check.add(diagnostic, "error", outcome.key, reply_values=values, mechanism=mechanism)
            return
        check.add(diagnostic, "error", outcome.key, reply_values=values, decoded=decoded_text)
        return
    if outcome.decoded is not None and has_control_characters(outcome.decoded) and mechanism != "PLAIN":
        check.add("auth-decodes-to-odd", "warning", decoded=decoded_text)
    elif outcome.decoded is not None and looks_like_base64_text(outcome.decoded.decode("utf-8", "replace")):
        check.add("auth-double-base64", "warning", decoded=decoded_text)
    if outcome.kind == "challenge":
        if outcome.user is not None:  # AUTH LOGIN user name accepted; the password comes next
            if profile.find_account(outcome.user) is None and not profile.quirks.accept_any_secret:
                check.add("auth-unknown-user-later", "warning", user=outcome.user)
            else:
                check.add("auth-decoded", "info", decoded=decoded_text)
        return
    user = outcome.user or ""
    session = check.session
    if mechanism == "LOGIN" and outcome.decoded is not None:
        typed = outcome.decoded.decode("utf-8", "replace")
        if session.auth is not None and typed == (session.auth.username or None):
            check.add("auth-password-is-user", "warning")
    verdict = check_login(profile, user, outcome.check)
    if verdict.ok:
        return
    values = {"user": user}
    if verdict.diagnostic == "auth-web-password" and verdict.account is not None:
        check.add("auth-web-password", "error", fail_key, reply_values=values,
                  user=user, kind=secret_kind(verdict.account.secret_kind, check.lang))
    else:
        check.add(verdict.diagnostic, "error", fail_key, reply_values=values, user=user)
