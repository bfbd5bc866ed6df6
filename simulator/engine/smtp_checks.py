"""Check one SMTP line: the protocol core decides, this module explains.

The server's answer is `mailprotocol.smtp` run on a shadow state built from the client-side
session (`shadow_state`); every reply a diagnostic shows is rendered from that decision, so it is
the mock server's own text. `SMTPCheck.run()` walks the steps a learner's line meets (framing,
verb, HELO gate, the verb's grammar, AUTH, DATA text) and says which mistake it is and how to fix
it; warnings and notes are advice the server would never give.
"""

from __future__ import annotations

import re
from typing import Any

from mailprotocol import credentials
from mailprotocol import sasl as core_sasl
from mailprotocol import smtp as core
from mailprotocol.decision import AUTH_FAILED, Decision, Reply
from mailprotocol.sasl import IMPLEMENTED_MECHANISMS
from mailprotocol.addresses import MAX_PATH, AddressProblem, AddressSyntaxError, MailboxProblem, PathArgument, is_domain
from mailprotocol.parameters import ParameterProblem, ParameterWhy
from mailprotocol.persona_rules import helo_refused_at, is_fqdn_helo
from mockservers.profile import Profile
from mockservers.rendering import render_smtp
from mailprotocol.codec import b64encode_text

from .checks import LineCheck, common_values, describe_decoded, has_control_characters, looks_like_base64_text
from .data_checks import check_data_line, estimated_size
from .diagnostics import secret_kind
from .prediction import HOLE, Prediction
from .replies import looks_like_command

#: Host names learners may copy; the suggestion for a bad HELO/EHLO argument.
EXAMPLE_HELO = "client.example.com"

_SYNTAX_WITH_EXAMPLE = {"MAIL": "MAIL FROM:<{address}>", "RCPT": "RCPT TO:<{address}>"}


class SMTPCheck(LineCheck):
    protocol = "smtp"
    other_protocol = "pop3"
    core = core

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
        if decision.effect(core.RECIPIENT_CHECK) is not None and policies.greylist_delay:
            decision = core.greylisted(decision, policies.greylist_delay)
        query = decision.effect(core.QUEUE_COUNT)
        if query is not None:
            decision = core.queue_answer(decision.state, query, 0)
        chunk = decision.effect(core.READ_CHUNK)
        if chunk is not None:
            decision = core.chunk_done(decision.state, chunk, False, None)  # type: ignore[arg-type]
            if not decision.replies:
                decision = self.end_of_message(decision.state)
        if not decision.replies:
            return None
        return Prediction(tuple(self.reply_lines(decision.replies[0])))

    def end_of_message(self, state: core.SMTPState, size: int | None = None) -> core.SMTPDecision:
        """The core's answer to the message typed so far (`size` None: BDAT, whose chunks were counted)."""
        lines = self.session.message_lines
        received = estimated_size(lines) if size is not None else 0  # as sent: dot-stuffed
        has_8bit = size is not None and not all(text.isascii() for text in lines)
        return core.end_of_message(state, self.profile, received, size, has_8bit)

    def code_of(self, reply: list[str] | tuple[str, ...]) -> str:
        return reply[-1][:3]

    def render_fault(self, lines: tuple[str, ...]) -> list[str]:
        return render_smtp(lines, self.profile.values(**common_values(self.client_ip)))

    # --- the server's view of the session --------------------------------------------------------

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

    def blank_state(self) -> core.SMTPState:
        return core.SMTPState(tls=self.tls)

    # --- entry point ---------------------------------------------------------------------------

    def raw_data(self) -> bool:
        """A line of DATA text, or octets of a BDAT chunk."""
        session = self.session
        if session.data_mode:
            check_data_line(self)
        elif session.bdat_remaining:
            self.add("bdat-octets", "info", remaining=session.bdat_remaining)
        return bool(session.data_mode or session.bdat_remaining)

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
        if self.too_long():
            return
        if self.reason == "bad-characters":
            self.add("nul-character", "error")
            return
        if line != line.lstrip() and text:
            self.add("leading-space", "warning", suggestion=line.strip())
        if self.reason in ("unknown-command", "too-many-unknown"):
            self.unknown(verb_token, argument)
            return
        if action is not None and self.apply_fault(action, verb):
            return
        if self.reason != "needs-helo" and not self.greeted and not core.VERB_TABLE[verb].before_helo:
            self.add("need-helo", "warning", verb=verb)
        self.explain(verb, argument)
        self.non_ascii(verb, argument)

    def unknown(self, verb_token: str, argument: str) -> None:
        """Which mistake made the verb unknown: glued, no separator, a POP3 verb, a typo."""
        verb = verb_token.upper()
        if not verb_token:
            self.add("empty-line", "error")
            return
        if verb in self.profile.quirks.smtp_unimplemented and verb in core.VERB_NAMES:
            self.add("command-not-offered", "error", verb=verb)
            self.count_unknown()
            return
        glued = re.match(r"^(MAIL|RCPT)[^A-Za-z]*(FROM|TO)\s*(:.*)?$", verb_token, re.IGNORECASE)
        letters = re.match(r"[A-Za-z]*", verb_token).group(0).upper()  # type: ignore[union-attr]
        if glued:
            fixed = f"{glued.group(1).upper()} {glued.group(2).upper()}{glued.group(3) or ':'}"
            self.add("verb-glued", "error", suggestion=_join(fixed, argument), verb=verb_token)
        elif letters in core.VERB_NAMES and letters != verb:
            rest = verb_token[len(letters):].strip(" \t.,;:")
            self.add(
                "verb-separator", "error",
                suggestion=_join(letters, (rest + " " + argument).strip()), verb=verb_token,
            )
        else:
            offered = set(core.available_commands(self.state, self.profile)) | {"AUTH"}
            candidates = [v for v in core.SUGGESTION_ORDER if v in offered and v not in self.profile.quirks.smtp_unimplemented]
            self.guess_verb(verb_token, argument, candidates)
        self.count_unknown()

    def count_unknown(self) -> None:
        """A persona that hangs up after N unknown commands: the core's second reply says so."""
        if self.reason == "too-many-unknown":
            limit = self.profile.quirks.disconnect_after_unknown
            self.add("too-many-unknown", "warning", reply=self.render("too_many_errors", {}), limit=limit)

    def non_ascii(self, verb: str, argument: str) -> None:
        if argument.isascii() or verb in ("MAIL", "RCPT"):
            return
        self.add("non-ascii-command", "warning", verb=verb)

    # --- the core's refusals, explained ----------------------------------------------------------

    def explain(self, verb: str, argument: str) -> None:
        """Name the mistake behind the core's refusal (table `_REFUSALS`), then add advice."""
        reason = self.reason
        entry = _REFUSALS.get(f"{verb} {reason}") or _REFUSALS.get(reason)
        if entry is not None:
            diagnostic_id, suggestion = entry
            mechanisms = self.profile.smtp_auth_mechanisms(self.tls)
            usable = [m for m in mechanisms if m in IMPLEMENTED_MECHANISMS] or mechanisms or ["PLAIN"]
            values = {
                "verb": verb, "name": argument.split()[0] if argument else EXAMPLE_HELO, "helo": self.session.helo_domain,
                "sender": self.sender_example(), "usable": usable[0], "offered": mechanisms,
                "account": self.account_now(), "topic": argument, "address": argument.strip("<>").strip(),
                "limit": self.policies.max_auth_failures if reason == "auth-failures-refused" else self.policies.max_recipients,
            }
            if diagnostic_id == "need-auth" and not mechanisms:
                suggestion = "STARTTLS" if "STARTTLS" in self.extensions else None
            values["mechanism"] = argument.split()[0] if reason == "mechanism-not-offered" else (argument.split() or [""])[0].upper()
            reply = self.decision.replies[0].values if self.decision is not None and self.decision.replies else {}
            values.update({k: v for k, v in reply.items() if k in ("address", "user") and v is not None})
            if reason == "relay-denied":
                values["domain"] = values["address"].rpartition("@")[2]
            self.add(diagnostic_id, "error", suggestion=suggestion.format(**values) if suggestion else None, **values)
        teach = getattr(self, f"teach_{verb}", None)
        if teach is not None:
            teach(argument)

    def teach_HELO(self, argument: str) -> None:  # noqa: N802
        self.helo("HELO", argument)

    def teach_EHLO(self, argument: str) -> None:  # noqa: N802
        self.helo("EHLO", argument)

    def helo(self, verb: str, argument: str) -> None:
        if self.reason in ("hello-syntax", "helo-not-fqdn"):
            return
        suggestion = f"{verb} {EXAMPLE_HELO}"
        literal = argument.startswith("[") and argument.endswith("]")
        if helo_refused_at(self.policies, argument, "rcpt"):
            # smtpd_delay_reject: accepted now, refused at every RCPT TO of this session.
            self.add("helo-not-fqdn-delayed", "warning", suggestion=suggestion, name=argument)
        elif not is_domain(argument if literal else argument.rstrip(".")):
            self.add("helo-bad-domain", "warning", suggestion=suggestion, name=argument)
        elif not is_fqdn_helo(argument):
            self.add("helo-not-fqdn", "warning", suggestion=suggestion, name=argument)
        if verb == "HELO" and len(self.profile.smtp_capabilities) > 0:
            self.add("helo-no-extensions", "info", suggestion=f"EHLO {argument}")
        if self.session.mail_from is not None:
            self.add("helo-resets-transaction", "info", verb=verb)

    def teach_QUIT(self, argument: str) -> None:  # noqa: N802
        if not self.reason and self.session.mail_from is not None:
            self.add("quit-abandons-message", "info")

    def teach_VRFY(self, argument: str, verb: str = "VRFY") -> None:  # noqa: N802
        if self.decision is not None and self.decision.replies and self.decision.replies[0].key == f"{verb.lower()}_cannot":
            self.add("vrfy-cannot", "info", verb=verb)

    def teach_EXPN(self, argument: str) -> None:  # noqa: N802
        self.teach_VRFY(argument, "EXPN")

    def teach_STARTTLS(self, argument: str) -> None:  # noqa: N802
        if not self.decided:
            self.add("starttls-telnet", "info")

    def teach_ATRN(self, argument: str) -> None:  # noqa: N802
        if not self.reason:
            self.add("atrn-no-mail", "error")  # the lab's queue holds nothing for an ATRN client

    def teach_DATA(self, argument: str) -> None:  # noqa: N802
        if not self.decided:
            self.add("data-start", "info")

    def teach_BDAT(self, argument: str) -> None:  # noqa: N802
        chunk = self.decision.effect(core.READ_CHUNK) if self.decision is not None else None
        if chunk is None:
            return
        entry = _CHUNK_REFUSALS.get(chunk["error"])
        if entry is not None:
            self.add(entry[0], "error", suggestion=entry[1], reply=self.prediction().shown())  # type: ignore[union-attr]
        self.add("bdat-chunk", "info", size=argument.split()[0])

    # --- AUTH ------------------------------------------------------------------------------------

    def teach_AUTH(self, argument: str) -> None:  # noqa: N802
        """`AUTH mechanism [initial-response]` that the server takes up: explain what comes of it."""
        parts = argument.split()
        if not parts or (self.reason and self.reason not in _SASL_REASONS and not self.reason.startswith("auth-")) or self.reason in _AUTH_GATES:
            return
        mechanism = parts[0].upper()
        if not self.session.esmtp:
            self.add("auth-after-helo", "warning")
        if self.reason == "auth-mechanism-unsupported":
            mechanisms = self.profile.smtp_auth_mechanisms(self.tls)
            usable = [m for m in mechanisms if m in IMPLEMENTED_MECHANISMS]
            self.add("auth-mechanism-unsupported", "error", suggestion=f"AUTH {usable[0]}" if usable else None, mechanism=mechanism)
            return
        initial = parts[1] if len(parts) > 1 else None
        step = self.decision.detail if self.decision is not None else None  # the core's SASL step
        if isinstance(step, core_sasl.Step) and (step.kind != "challenge" or initial is not None):
            explain_sasl_step(self, step, mechanism, initial or "")
        if not self.tls and mechanism in ("PLAIN", "LOGIN") and not self.decided:
            self.add("auth-cleartext", "info")

    def auth_line(self) -> None:
        exchange = self.session.auth
        line = self.line
        if self.too_long():
            return
        self.decision = core.auth_line(self.state, self.profile, line)
        if exchange.mechanism in IMPLEMENTED_MECHANISMS:
            explain_sasl_step(self, self.decision.detail, exchange.mechanism, line)

    # --- the transaction -------------------------------------------------------------------------

    def teach_MAIL(self, argument: str) -> None:  # noqa: N802
        path = self.path("MAIL", "FROM", argument)
        if path is None or self.decided:
            return
        if path.address == "":
            self.add("null-sender", "info")
        if path.params and not self.session.esmtp:
            self.add("parameters-after-helo", "warning")

    def teach_RCPT(self, argument: str) -> None:  # noqa: N802
        envelope = self.state.envelope
        path = self.path("RCPT", "TO", argument)
        if path is not None and "@" not in path.address:
            # RFC 5321 4.1.1.3 / 4.5.1: `RCPT TO:<Postmaster>` without a domain MUST be accepted.
            if envelope is not None:
                self.add("rcpt-postmaster", "info")
            return
        if path is None or envelope is None or self.decided and self.reason:
            return
        address = path.address
        local = self.profile.is_local_domain(path.domain)
        if self.prediction() and self.decision.effect(core.RECIPIENT_CHECK) is not None and self.policies.greylist_delay:  # type: ignore[union-attr]
            seconds = round(self.policies.greylist_delay)
            self.add("greylisted", "error", reply=self.prediction().shown(), seconds=seconds)  # type: ignore[union-attr]
        elif local and address.rpartition("@")[0].lower() == "postmaster":
            self.add("rcpt-postmaster", "info")  # RFC 5321 4.5.1: every domain has a postmaster
        elif core.recipient_key(self.profile, address) in envelope.recipients:
            self.add("rcpt-duplicate", "info", address=address)
        elif not local:
            self.add("rcpt-relay", "info", domain=path.domain)

    def sender_example(self) -> str:
        account = self.account_now()
        if account:
            return account
        return self.profile.accounts[0].address if self.profile.accounts else "you@example.com"

    def path(self, verb: str, keyword: str, argument: str) -> PathArgument | None:
        """`MAIL FROM:` / `RCPT TO:` as the server read it (`parsed_path`): which grammar mistake, and the fixed line."""
        strict = self.strict()
        low = verb.lower()
        example = _SYNTAX_WITH_EXAMPLE[verb].format(address=self.guess_address(argument) or "user@example.com")
        before = re.match(rf"^{keyword}(\s+):", argument, re.IGNORECASE)
        after = re.match(rf"^{keyword}\s*:(\s+)", argument, re.IGNORECASE)
        path = self.parsed_path(verb, argument)
        fixed = self.fixed_line(verb, keyword, argument)
        if path is None:
            if not re.match(rf"^{keyword}\s*:", argument, re.IGNORECASE):
                self.add(f"{low}-missing-keyword", "error", suggestion=example, keyword=f"{keyword}:")
            else:
                self.add(f"{low}-space-{'before' if before else 'after'}-colon", "error", suggestion=fixed, keyword=keyword)
            return None
        if not strict and before:
            self.add(f"{low}-space-before-colon", "warning", suggestion=fixed, keyword=keyword)
        if not strict and after:
            self.add(f"{low}-space-after-colon", "warning", suggestion=fixed, keyword=keyword)
        if isinstance(path, AddressSyntaxError):
            self.address_problem(verb, path, example, fixed)
            return None
        if not path.bracketed:
            self.add(f"{low}-missing-brackets", "info", suggestion=fixed, keyword=keyword)
        if path.source_route:
            self.add("source-route", "warning")
        if self.reason == "parameter":
            self.parameter_problem(verb, self.decision.detail)  # type: ignore[union-attr]
        elif self.reason == "utf8-not-declared":
            self.utf8_not_declared(verb, argument)
        return path

    def parsed_path(self, verb: str, argument: str) -> PathArgument | AddressSyntaxError | None:
        """The path as the core read it: its decision's detail, or, when it refused the line before
        reading the path (no MAIL yet, a nested MAIL), the core's own reading of it."""
        detail = self.decision.detail if self.decision is not None else None
        if isinstance(detail, (PathArgument, AddressSyntaxError)):
            return detail
        return core.path_argument(self.profile, verb, argument)

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

    def address_problem(self, verb: str, problem: AddressSyntaxError, example: str, fixed: str) -> None:
        """The address mistake the server's grammar found (its typed problem), with a fix to try."""
        kind = problem.problem
        if kind is AddressProblem.BAD_MAILBOX:
            diagnostic_id = _MAILBOX_PROBLEMS[problem.mailbox]  # type: ignore[index]
        else:
            diagnostic_id = _ADDRESS_PROBLEMS[kind].format(verb=verb.lower())
        suggestion = {
            AddressProblem.NO_ADDRESS: example, AddressProblem.EMPTY: example,
            AddressProblem.UNCLOSED_BRACKET: fixed, AddressProblem.MISSING_BRACKETS: fixed,
            AddressProblem.PARAMETERS_NOT_SEPARATED: fixed if "> " in fixed else fixed.replace(">", "> ", 1),
        }.get(kind)
        self.add(diagnostic_id, "error", suggestion=suggestion, keyword="FROM" if verb == "MAIL" else "TO",
                 reason=str(problem), limit=MAX_PATH, address=problem.address)

    def parameter_problem(self, verb: str, problem: ParameterProblem) -> None:
        """The MAIL/RCPT parameter the core refused, and why (its decision names it)."""
        option = problem.option
        if problem.why is ParameterWhy.SIZE_EXCEEDED:
            self.add("param-size-exceeded", "error", size=problem.value, limit=self.policies.max_message_size)
        elif problem.why is ParameterWhy.SYNTAX:
            self.add(f"param-{problem.key.lower()}-syntax", "error", option=option)
        elif problem.why is ParameterWhy.BINARYMIME:
            self.add("param-body-binarymime", "error", option=option)
        elif problem.why is ParameterWhy.NOT_ADVERTISED:
            self.add("param-not-advertised", "error", option=option, extension=problem.extension, verb=verb)
        else:
            self.add("param-unknown", "error", option=option, verb=verb)

    def utf8_not_declared(self, verb: str, argument: str) -> None:
        if "SMTPUTF8" not in self.extensions:
            self.add("utf8-not-supported", "error")
        else:
            suggestion = self.fixed_line("MAIL", "FROM", argument) + " SMTPUTF8" if verb == "MAIL" else None
            self.add("utf8-not-declared", "error", suggestion=suggestion)


#: The core's reason for refusing a line ("VERB reason" first, then "reason") -> (diagnostic, fix).
#: The reply is the core's; the diagnostic says which mistake it is and how to fix it.
_REFUSALS: dict[str, tuple[str, str | None]] = {
    "needs-helo": ("need-helo", f"EHLO {EXAMPLE_HELO}"),
    "no-argument-expected": ("no-argument-expected", "{verb}"),
    "STARTTLS no-argument-expected": ("starttls-syntax", "STARTTLS"),
    "hello-syntax": ("helo-syntax", "{verb} {name}"),
    "helo-not-fqdn": ("helo-not-fqdn", f"{{verb}} {EXAMPLE_HELO}"),
    "RCPT helo-not-fqdn": ("rcpt-helo-not-fqdn", f"EHLO {EXAMPLE_HELO}"),
    "help-unknown": ("help-unknown-topic", None),
    "turn-refused": ("turn-obsolete", None),
    "verify-disabled": ("vrfy-disabled", None),
    "verify-syntax": ("vrfy-syntax", "{verb} user@example.com"),
    "verify-unknown": ("vrfy-unknown", None),
    "tls-already": ("starttls-already", None),
    "not-advertised": ("command-not-offered", None),
    "auth-not-enabled": ("auth-not-offered", None),
    "needs-tls": ("auth-needs-tls", "STARTTLS"),
    "auth-failures-refused": ("auth-refused-after-failures", None),
    "auth-already": ("auth-already", None),
    "auth-in-transaction": ("auth-in-transaction", "RSET"),
    "auth-syntax": ("auth-syntax", "AUTH {usable}"),
    "mechanism-not-offered": ("auth-mechanism-not-offered", "AUTH {usable}"),
    "mechanism-needs-tls": ("auth-mechanism-needs-tls", "STARTTLS"),
    "nested-mail": ("nested-mail", "RSET"),
    "MAIL needs-auth": ("need-auth", "AUTH {usable}"),
    "MAIL needs-tls": ("need-auth", "AUTH {usable}"),
    "sender-not-owned": ("sender-not-owned", "MAIL FROM:<{account}>"),
    "RCPT needs-mail": ("rcpt-before-mail", "MAIL FROM:<{sender}>"),
    "too-many-recipients": ("too-many-recipients", None),
    "unknown-user": ("rcpt-unknown-user", None),
    "relay-denied": ("rcpt-relay-denied", None),
    "DATA needs-mail": ("data-before-mail", "MAIL FROM:<{sender}>"),
    "needs-rcpt": ("data-before-rcpt", "RCPT TO:<user@example.com>"),
    "no-valid-recipients": ("data-no-valid-recipients", None),
    "data-after-bdat": ("data-after-bdat", None),
    "bdat-syntax": ("bdat-syntax", "BDAT 100 LAST"),
    "transaction-in-progress": ("etrn-in-transaction", "RSET"),
    "etrn-syntax": ("etrn-syntax", "ETRN example.com"),
    "atrn-refused": ("atrn-refused", None),
    "ATRN needs-auth": ("atrn-needs-auth", None),
}
#: The grammar's typed problem with a MAIL/RCPT argument -> diagnostic ({verb}: mail or rcpt).
_ADDRESS_PROBLEMS: dict[AddressProblem, str] = {
    AddressProblem.NO_ADDRESS: "{verb}-empty-address",
    AddressProblem.EMPTY: "{verb}-empty-address",
    AddressProblem.UNCLOSED_BRACKET: "address-unclosed-bracket",
    AddressProblem.MISSING_BRACKETS: "{verb}-missing-brackets",
    AddressProblem.PARAMETERS_NOT_SEPARATED: "parameters-not-separated",
    AddressProblem.PARAMETER_MALFORMED: "parameter-malformed",
    AddressProblem.PARAMETER_TWICE: "parameter-malformed",
    AddressProblem.PATH_TOO_LONG: "path-too-long",
    AddressProblem.SOURCE_ROUTE_MALFORMED: "source-route-malformed",
}
_MAILBOX_PROBLEMS: dict[MailboxProblem, str] = {
    MailboxProblem.NO_AT: "address-no-at",
    MailboxProblem.LOCAL_PART_TOO_LONG: "address-local-part-too-long",
    MailboxProblem.BAD_DOMAIN: "address-bad-domain",
    MailboxProblem.BAD_LOCAL_PART: "address-bad-local-part",
}
#: What a BDAT chunk is refused for (decided at BDAT, answered after the chunk).
_CHUNK_REFUSALS = {
    "need_mail": ("bdat-before-mail", None), "need_rcpt": ("bdat-before-rcpt", None),
    "no_valid_recipients": ("data-no-valid-recipients", None), "bdat_after_failure": ("bdat-after-failure", "RSET"),
}
#: AUTH refused before any mechanism is looked at: nothing about the SASL exchange to explain.
_AUTH_GATES = {"needs-helo", "needs-tls", "auth-not-enabled", "auth-failures-refused", "auth-already",
               "auth-in-transaction", "auth-syntax", "mechanism-not-offered", "mechanism-needs-tls"}
_SASL_REASONS = {"unknown-user", "wrong-secret", "web-password"}


def shadow_state(session: Any, profile: Profile) -> core.SMTPState:
    """The server's state as the client can know it, for the core to decide on."""
    tls = bool(session.tls_active)
    blank = core.SMTPState(tls=tls)
    envelope = None
    # Each command as the core parsed it: the unknown ones count towards a persona's hang-up.
    commands = [(core.parse(blank, profile, e.sent), e.reply) for e in session.history if e.kind == "command" and e.sent is not None]
    unknown = sum(isinstance(parsed, Decision) and parsed.reason in ("unknown-command", "too-many-unknown") for parsed, _ in commands)
    if session.mail_from is not None:
        recipients = tuple(dict.fromkeys(core.recipient_key(profile, address) for address in session.recipients))
        attempts = 0
        for parsed, reply in reversed(commands):
            if isinstance(parsed, Decision):
                continue
            if parsed.verb == "MAIL" and getattr(reply, "code", None) == "250":
                break
            if parsed.verb == "RCPT" and core.path_argument(profile, "RCPT", parsed.argument) is not None:
                attempts += 1  # the core counts an attempt once it finds `TO:`
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
        account = credentials.login_address(profile, session.authenticated_user) or ((session.authenticated_user or "").strip().lower() or None)
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


def _join(verb: str, argument: str) -> str:
    return f"{verb} {argument}".strip()


# --- AUTH lines, both protocols -----------------------------------------------------------------


def explain_sasl_step(check: LineCheck, step: core_sasl.Step, mechanism: str, line: str) -> None:
    """Diagnostics for one AUTH line (or initial response) after the core's SASL step (both protocols)."""
    profile = check.profile
    decoded_text = describe_decoded(step.decoded)
    if check.session.auth is not None and looks_like_command(line):
        check.add("auth-command-typed", "warning")
    if step.kind == "error":
        stripped = line.strip()
        suggestion = b64encode_text(stripped) if stripped and not (mechanism == "PLAIN" and "@" in stripped) else None
        prediction = check.prediction()  # the core's reply (a cancel's 501 too, though it is no mistake)
        check.add(f"auth-{step.problem}" if step.problem else "auth-error", "info" if step.problem == "cancel" else "error",
                  reply=prediction.shown() if prediction else None, suggestion=suggestion if step.problem == "not-base64" else None, typed=stripped, mechanism=mechanism,
                  decoded=decoded_text, count=(step.decoded or b"").count(b"\0"))
        return
    if step.decoded is not None and has_control_characters(step.decoded) and mechanism != "PLAIN":
        check.add("auth-decodes-to-odd", "warning", decoded=decoded_text)
    elif step.decoded is not None and looks_like_base64_text(step.decoded.decode("utf-8", "replace")):
        check.add("auth-double-base64", "warning", decoded=decoded_text)
    if step.kind == "challenge":
        if step.user:  # LOGIN's user name accepted; the password comes next
            if profile.find_account(step.user) is None and not profile.quirks.accept_any_secret:
                check.add("auth-unknown-user-later", "warning", user=step.user)
            else:
                check.add("auth-decoded", "info", decoded=decoded_text)
        return
    user = step.user
    session = check.session
    if mechanism == "LOGIN" and step.decoded is not None and session.auth is not None:
        if step.decoded.decode("utf-8", "replace") == (session.auth.username or None):
            check.add("auth-password-is-user", "warning")
    failed = check.decision.effect(AUTH_FAILED) if check.decision is not None else None
    if failed is not None:  # the core's credentials verdict: why it refused the login
        verdict = failed["verdict"]
        kind = secret_kind(verdict.account.secret_kind, check.lang) if verdict.account is not None else ""
        check.add(f"auth-{verdict.reason}", "error", user=user, kind=kind)
