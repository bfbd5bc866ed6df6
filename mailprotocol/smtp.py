"""SMTP (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, STARTTLS, AUTH, ENHANCEDSTATUSCODES,
DSN, CHUNKING, ETRN): the verb table, the session state and every command decision, pure.

`decide(state, persona, line)` is the server's answer to one command line. The Twisted session
(`mockservers.smtp`) streams message data, stores mail and carries out the effects; the validator
runs the same decisions on a shadow state. Replies that wait on the server's memory or disk come
from the follow-ups: `greylisted`, `queue_answer`, `chunk_done`, `too_many_failures`, `locked_out`.
The grammar of paths and parameters is `addresses` / `parameters`, the persona rules
`persona_rules`: modules of this package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .addresses import AddressSyntaxError, MissingBrackets, PathArgument, parse_path, split_keyword, valid_helo_argument
from .parameters import ParameterProblem, first_parameter_problem
from .persona_rules import end_of_data_reply, helo_refused_at, missing_brackets_key

from . import credentials, sasl
from .decision import AUTH_FAILED, CLOSE, START_SASL, START_TLS, Decision, Effect, Reply, argument_of as _argument_of, replace

if TYPE_CHECKING:
    from mockservers.profile import Profile

#: Effect kinds of SMTP besides the shared ones.
AUTHENTICATED = "authenticated"  # an AUTH succeeded: reset the client's failure count
RECIPIENT_CHECK = "recipient-check"  # a recipient accepted, pending the server's greylist and quota checks
START_DATA = "start-data"  # after the 354: the message text follows, up to CRLF.CRLF
READ_CHUNK = "read-chunk"  # BDAT: read `size` octets, then `chunk_done`
QUEUE_COUNT = "queue-count"  # ETRN/ATRN: how much mail waits for these domains, then `queue_answer`
EVENT = "event"  # something the server's log and live views show


@dataclass(frozen=True)
class Verb:
    """One row of the verb table.

    `before_helo`: allowed before HELO/EHLO on a persona that wants a greeting first;
    `capability`: the EHLO keyword that must be advertised for the verb to work ("" always);
    `anytime`: a client may send it in any state of a transaction without changing it;
    `between_chunks`: allowed between BDAT chunks (RFC 3030 2);
    `knowledge`: the entry in simulator/knowledge/smtp_commands.toml that explains it.
    """

    name: str
    grammar: str
    before_helo: bool = False
    capability: str = ""
    rank: int = 99  # the order "did you mean ...?" prefers when two verbs are equally close
    anytime: bool = False
    between_chunks: bool = False
    logs_in: bool = False  # carries a secret (masked in transcripts)
    starts_tls: bool = False  # accepted, the session starts over in TLS (RFC 3207 4.2)

    @property
    def argument(self) -> str:
        """ "none", "optional" or "required", read from the grammar."""
        return _argument_of(self.name, self.grammar)

    @property
    def knowledge(self) -> str:
        return f"commands.{self.name}"


#: Every SMTP verb, in the order HELP lists them.
VERBS: tuple[Verb, ...] = (
    Verb("HELO", "HELO <domain>", True, rank=1),
    Verb("EHLO", "EHLO <domain>", True, rank=0),
    Verb("MAIL", "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=<address>]", rank=2),
    Verb("RCPT", "RCPT TO:<address> [NOTIFY=NEVER|SUCCESS,FAILURE,DELAY] [ORCPT=rfc822;address]", rank=3),
    Verb("DATA", "DATA", rank=4),
    Verb("BDAT", "BDAT <octets> [LAST]", capability="CHUNKING", rank=13, between_chunks=True),
    Verb("RSET", "RSET", True, rank=6, anytime=True, between_chunks=True),
    Verb("NOOP", "NOOP [string]", True, rank=7, anytime=True, between_chunks=True),
    Verb("VRFY", "VRFY <user or address>", True, rank=10, anytime=True),
    Verb("EXPN", "EXPN <mailing list>", True, rank=11, anytime=True),
    Verb("HELP", "HELP [command]", True, rank=12, anytime=True),
    Verb("QUIT", "QUIT", True, rank=5, anytime=True, between_chunks=True),
    Verb("STARTTLS", "STARTTLS", capability="STARTTLS", rank=9, starts_tls=True),
    Verb("AUTH", "AUTH <PLAIN|LOGIN|CRAM-MD5> [initial-response]", capability="AUTH", rank=8, logs_in=True),
    Verb("ETRN", "ETRN <domain> | @<domain> | #<queue>", capability="ETRN", rank=14),
    Verb("TURN", "TURN", True, rank=15),
    Verb("ATRN", "ATRN [domain[,domain...]]", rank=16),
)
VERB_TABLE: dict[str, Verb] = {verb.name: verb for verb in VERBS}
VERB_NAMES: frozenset[str] = frozenset(VERB_TABLE)
ANYTIME: tuple[str, ...] = tuple(verb.name for verb in VERBS if verb.anytime)
BETWEEN_CHUNKS: frozenset[str] = frozenset(verb.name for verb in VERBS if verb.between_chunks)
#: The verbs in the order "did you mean ...?" prefers.
SUGGESTION_ORDER: tuple[str, ...] = tuple(verb.name for verb in sorted(VERBS, key=lambda verb: verb.rank))


@dataclass(frozen=True)
class Envelope:
    """The mail transaction in progress: one MAIL and its accepted RCPTs."""

    sender: str
    params: Mapping[str, str | None] = field(default_factory=dict)
    local: tuple[str, ...] = ()
    relay: tuple[str, ...] = ()
    rcpt_attempts: int = 0
    bdat_used: bool = False
    bdat_failed: bool = False

    @property
    def recipients(self) -> tuple[str, ...]:
        return self.local + self.relay


@dataclass(frozen=True)
class SMTPState:
    """Everything an SMTP decision depends on in one session.

    `auth_failures` is what the server remembers of this client's failed logins (a prediction
    knows only its own session); `challenge` is the CRAM-MD5 challenge a server makes before AUTH.
    """

    tls: bool = False
    tls_available: bool = True
    helo: str | None = None
    esmtp: bool = False
    authenticated_as: str | None = None
    envelope: Envelope | None = None
    exchange: sasl.Exchange | None = None
    unknown_count: int = 0
    auth_failures: int = 0
    challenge: bytes = b""


@dataclass(frozen=True)
class Command:
    """A line the server dispatches: the verb (upper case) and its argument (stripped)."""

    verb: str
    argument: str


SMTPDecision = Decision[SMTPState]


def _answer(state: SMTPState, key: str, why: str = "", effects: tuple[Effect, ...] = (), **values: Any) -> SMTPDecision:
    """One reply; `why` becomes the decision's reason (`values` may hold a `{reason}` placeholder)."""
    return Decision((Reply(key, dict(values)),), state, effects, why)


# --- the line ----------------------------------------------------------------------------------------


def line_limit_for(state: SMTPState, persona: "Profile", start: bytes) -> int:
    """Octets (CRLF included) a line starting with `start` may take before the server's framing
    discards it unread, also what the validator holds a typed line to. MAIL lines may be longer:
    SIZE= adds 26 octets (RFC 1870 4), AUTH= adds 500 (RFC 4954 5); `parse` then holds the line
    to what its own parameters allow.
    """
    policies = persona.policies
    if state.exchange is not None:
        return policies.max_auth_line
    return policies.max_command_line + (526 if start[:4].upper() == b"MAIL" else 0)


def length_allowance(state: SMTPState, persona: "Profile", verb: str, argument: str) -> int:
    """Octets MAIL parameters add to the line limit: SIZE 26 (RFC 1870 4), AUTH= 500 (RFC 4954 5)."""
    if verb != "MAIL":
        return 0
    extensions = persona.smtp_extensions(state.tls)
    params = {token.partition("=")[0].upper() for token in argument.partition(">")[2].split()}
    return (26 if "SIZE" in params and "SIZE" in extensions else 0) + (500 if "AUTH" in params and "AUTH" in extensions else 0)


def line_too_long(state: SMTPState, limit: int | None = None) -> SMTPDecision:
    """A line over the limit is discarded; inside AUTH it also ends the exchange. The limit, when
    known, is the detail (a teacher names it)."""
    if state.exchange is not None:
        return Decision((Reply("auth_line_too_long"),), replace(state, exchange=None), (), "line-too-long", limit)
    return Decision((Reply("line_too_long"),), state, (), "line-too-long", limit)


def bad_characters(state: SMTPState) -> SMTPDecision:
    return _answer(state, "bad_characters", "bad-characters")


def greeting(state: SMTPState) -> SMTPDecision:
    return _answer(state, "greeting")


def parse(state: SMTPState, persona: "Profile", line: str) -> Command | SMTPDecision:
    """The command on a line, or the decision when the line is not dispatched as one."""
    if state.exchange is not None:
        return auth_line(state, persona, line)
    if "\0" in line:
        return bad_characters(state)
    verb, _, argument = line.strip().partition(" ")
    verb = verb.upper()
    if not verb.isalpha() or verb not in VERB_NAMES or verb in persona.quirks.smtp_unimplemented:
        return unknown_command(state, persona)
    argument = argument.strip()
    octets = len(line.encode("utf-8", "surrogateescape"))
    limit = persona.policies.max_command_line + length_allowance(state, persona, verb, argument)
    if octets + 2 > limit:
        return line_too_long(state, limit)
    return Command(verb, argument)


def unknown_command(state: SMTPState, persona: "Profile") -> SMTPDecision:
    """500; a persona that hangs up after N unknown commands says 421 at the N-th."""
    limit = persona.quirks.disconnect_after_unknown
    if not limit:
        return _answer(state, "unknown_command", "unknown-command")
    state = replace(state, unknown_count=state.unknown_count + 1)
    if state.unknown_count < limit:
        return _answer(state, "unknown_command", "unknown-command")
    event = Effect(EVENT, {"kind": "disconnected after unknown commands", "detail": f"{state.unknown_count} unknown commands"})
    return Decision((Reply("unknown_command"), Reply("too_many_errors")), state, (event,), "too-many-unknown")


def decide(state: SMTPState, persona: "Profile", line: str) -> SMTPDecision:
    """The server's answer to one command line (without a fault script)."""
    parsed = parse(state, persona, line)
    if isinstance(parsed, Decision):
        return parsed
    return dispatch(state, persona, parsed)


def dispatch(state: SMTPState, persona: "Profile", command: Command) -> SMTPDecision:
    """A known command: refused before HELO on personas that want one, else decided by its verb."""
    if persona.policies.require_helo and state.helo is None and not VERB_TABLE[command.verb].before_helo:
        return _answer(state, "need_helo", "needs-helo")
    return _HANDLERS[command.verb](state, persona, command.argument)


# --- greeting and simple commands ---------------------------------------------------------------------


def _hello(state: SMTPState, persona: "Profile", argument: str, esmtp: bool) -> SMTPDecision:
    if not valid_helo_argument(argument):  # one word, no control characters (they would reach Received:)
        return _answer(state, "ehlo_syntax" if esmtp else "helo_syntax", "hello-syntax")
    if helo_refused_at(persona.policies, argument, "helo"):
        return _answer(state, "helo_not_fqdn", "helo-not-fqdn", domain=argument)
    # A new HELO/EHLO resets the transaction like RSET (RFC 5321 4.1.4).
    state = replace(state, helo=argument, esmtp=esmtp, envelope=None)
    return _answer(state, "ehlo" if esmtp else "helo", client=argument)


def _helo(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    return _hello(state, persona, argument, esmtp=False)


def _ehlo(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    return _hello(state, persona, argument, esmtp=True)


def _noop(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    return _answer(state, "noop")


def _rset(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if argument:
        return _answer(state, "no_arguments", "no-argument-expected", verb="RSET")
    return _answer(replace(state, envelope=None), "rset")


def _quit(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if argument:
        return _answer(state, "no_arguments", "no-argument-expected", verb="QUIT")
    return _answer(state, "quit", effects=(Effect(CLOSE),))


def available_commands(state: SMTPState, persona: "Profile") -> list[str]:
    """The verbs HELP lists: those whose extension or policy is on now (TURN never)."""
    extensions = persona.smtp_extensions(state.tls)
    shown = []
    for verb in VERBS:
        if verb.name == "TURN" or (verb.name == "ATRN" and not persona.policies.atrn):
            continue
        if verb.name == "AUTH":
            if not persona.smtp_auth_mechanisms(state.tls):
                continue
        elif verb.capability and verb.capability not in extensions:
            continue
        shown.append(verb.name)
    return shown


def _help(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if not argument:
        return _answer(state, "help", commands=" ".join(available_commands(state, persona)))
    topic = argument.split()[0].upper()
    if topic in VERB_TABLE and topic in available_commands(state, persona):
        return _answer(state, "help_topic", topic=topic, syntax=VERB_TABLE[topic].grammar)
    return _answer(state, "help_unknown", "help-unknown", topic=argument)


def _turn(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    return _answer(state, "turn_refused", "turn-refused")


def _verify(state: SMTPState, persona: "Profile", argument: str, kind: str, mode: str) -> SMTPDecision:
    if mode == "disabled":
        return _answer(state, f"{kind}_disabled", "verify-disabled")
    if not argument:
        return _answer(state, f"{kind}_syntax", "verify-syntax")
    address = argument.strip("<>").strip()
    if mode == "252":
        return _answer(state, f"{kind}_cannot", address=address)
    account = persona.find_account(address)
    if account is None:
        return _answer(state, f"{kind}_unknown", "verify-unknown", address=address)
    return _answer(state, f"{kind}_ok", address=account.address)


def _vrfy(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    return _verify(state, persona, argument, "vrfy", persona.policies.vrfy)


def _expn(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    return _verify(state, persona, argument, "expn", persona.policies.expn)


# --- STARTTLS and AUTH -----------------------------------------------------------------------------------


def _starttls(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if state.tls:
        return _answer(state, "tls_already", "tls-already")
    if "STARTTLS" not in persona.smtp_extensions(False):
        return _answer(state, "unknown_command", "not-advertised")
    if argument:
        return _answer(state, "starttls_syntax", "no-argument-expected")
    if not state.tls_available:
        return _answer(state, "starttls_unavailable", "tls-unavailable")
    # RFC 3207 4.2: the session starts over; the client must EHLO again.
    state = replace(state, tls=True, helo=None, esmtp=False, authenticated_as=None, envelope=None)
    return _answer(state, "starttls_ready", effects=(Effect(START_TLS),))


def _auth(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    policies = persona.policies
    if policies.require_tls_for_auth and not state.tls:
        return _answer(state, "tls_required", "needs-tls")
    mechanisms = persona.smtp_auth_mechanisms(state.tls)
    if not mechanisms:  # not offered now; when TLS would bring it, TLS is what is missing
        why = "needs-tls" if not state.tls and persona.smtp_auth_mechanisms(True) else "auth-not-enabled"
        return _answer(state, "auth_not_enabled", why)
    if policies.max_auth_failures and policies.auth_failure_action == "refuse" and state.auth_failures >= policies.max_auth_failures:
        return _answer(state, "auth_failures_refused", "auth-failures-refused")
    if state.authenticated_as is not None:
        return _answer(state, "auth_already", "auth-already")
    if state.envelope is not None:
        return _answer(state, "auth_in_transaction", "auth-in-transaction")
    parts = argument.split()
    if not parts or len(parts) > 2:
        return _answer(state, "auth_syntax", "auth-syntax")
    mechanism = parts[0].upper()
    if mechanism not in mechanisms:
        return _answer(state, "auth_unknown_mechanism", "mechanism-not-offered", mechanism=parts[0])
    if mechanism in (m.upper() for m in policies.mechanisms_requiring_tls) and not state.tls:
        return _answer(state, "auth_encryption_required", "mechanism-needs-tls", mechanism=mechanism)
    return _auth_step(state, persona, sasl.start(mechanism, parts[1] if len(parts) > 1 else None, state.challenge))


def auth_line(state: SMTPState, persona: "Profile", line: str) -> SMTPDecision:
    """One client line of an AUTH exchange."""
    assert state.exchange is not None
    return _auth_step(state, persona, sasl.respond(state.exchange, line))


def _auth_step(state: SMTPState, persona: "Profile", step: sasl.Step) -> SMTPDecision:
    """The decision on one SASL step; the step rides along as the detail (what the line decoded to)."""
    return replace(_sasl_answer(state, persona, step), detail=step)


def _sasl_answer(state: SMTPState, persona: "Profile", step: sasl.Step) -> SMTPDecision:
    if step.kind == "challenge":
        return Decision((Reply(step.key, dict(step.values)),), replace(state, exchange=step.exchange), (Effect(START_SASL),))
    state = replace(state, exchange=None)
    if step.kind == "error":
        return _answer(state, step.key, f"auth-{step.problem}" if step.problem else "auth-error", **step.values)
    assert step.check is not None
    verdict = credentials.check_login(persona, step.user, step.check)
    if not verdict.ok:
        effect = Effect(AUTH_FAILED, {"user": step.user, "reason": verdict.describe(), "verdict": verdict})
        return _answer(state, "auth_failed", verdict.reason, (effect,), user=step.user)
    state = replace(state, authenticated_as=verdict.address)
    return _answer(state, "auth_ok", effects=(Effect(AUTHENTICATED, {"address": verdict.address}),), user=verdict.address)


def too_many_failures(state: SMTPState, persona: "Profile", failures: int) -> SMTPDecision | None:
    """After a failed AUTH: 421 and the end when the persona disconnects at its limit."""
    policies = persona.policies
    if policies.max_auth_failures and failures >= policies.max_auth_failures and policies.auth_failure_action == "disconnect":
        return _answer(state, "too_many_errors", "too-many-failures")
    return None


def locked_out(state: SMTPState) -> SMTPDecision:
    """Too many failed logins from this client lately (the server's memory, `auth_lockout_failures`):
    AUTH is refused without looking at a secret; an exchange under way ends, its outcome untold.
    """
    return _answer(replace(state, exchange=None), "auth_failures_refused", "auth-locked-out")


# --- the transaction -----------------------------------------------------------------------------------


def _mail(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    policies = persona.policies
    if state.envelope is not None:
        return _answer(state, "nested_mail", "nested-mail")
    if policies.require_tls_for_mail and not state.tls:
        return _answer(state, "tls_required", "needs-tls")
    if policies.require_auth_for_mail and state.authenticated_as is None:
        return _answer(state, "auth_required", "needs-auth")
    path = path_argument(persona, "MAIL", argument)
    if path is None:
        return _answer(state, "mail_syntax", "path-syntax")
    if isinstance(path, AddressSyntaxError):
        return _path_refused(state, "MAIL", path)
    refused = first_parameter_problem("MAIL", path.params, persona.smtp_extensions(state.tls), policies.max_message_size)
    if refused is not None:
        return _parameter_refused(state, refused)
    if path.non_ascii and "SMTPUTF8" not in path.params:
        return _answer(state, "utf8_not_declared", "utf8-not-declared")
    if policies.sender_must_match_auth and state.authenticated_as is not None and path.address.lower() != state.authenticated_as:
        return _answer(state, "sender_not_owned", "sender-not-owned", address=path.address, user=state.authenticated_as)
    state = replace(state, envelope=Envelope(path.address, dict(path.params)))
    return Decision((Reply("mail_ok", {"address": path.address}),), state, (), "", path)


#: The keyword before the path of the verbs that carry one.
_PATH_KEYWORDS = {"MAIL": "FROM", "RCPT": "TO"}


def path_argument(persona: "Profile", verb: str, argument: str) -> PathArgument | AddressSyntaxError | None:
    """`MAIL FROM:`/`RCPT TO:` as the server reads the argument: the path, the grammar's typed
    problem with it, or None without the keyword. MAIL may name the null sender `<>`, RCPT the bare
    `<Postmaster>` (RFC 5321 4.1.1.3); the persona says how strict the grammar is.
    """
    strict = persona.policies.strict_syntax
    split = split_keyword(argument, _PATH_KEYWORDS[verb], strict=strict)
    if split is None:
        return None
    try:
        return parse_path(split[0], strict=strict, allow_null=verb == "MAIL", allow_postmaster=verb == "RCPT")
    except AddressSyntaxError as problem:
        return problem


def _path_refused(state: SMTPState, verb: str, problem: AddressSyntaxError) -> SMTPDecision:
    """A MAIL/RCPT argument the grammar refuses; the typed problem rides along as the detail."""
    if isinstance(problem, MissingBrackets):
        key, why = missing_brackets_key(verb), "missing-brackets"
    else:
        key, why = ("bad_sender_syntax" if verb == "MAIL" else "bad_recipient_syntax"), "address-syntax"
    return Decision((Reply(key, {"reason": str(problem)}),), state, (), why, problem)


def _parameter_refused(state: SMTPState, problem: ParameterProblem) -> SMTPDecision:
    return Decision((Reply(problem.reply, dict(problem.values)),), state, (), "parameter", problem)


def _rcpt(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    envelope = state.envelope
    if envelope is None:  # RFC 5321 3.3: sequence before syntax
        return _answer(state, "need_mail", "needs-mail")
    policies = persona.policies
    path = path_argument(persona, "RCPT", argument)
    if path is None:
        return _answer(state, "rcpt_syntax", "path-syntax")
    envelope = replace(envelope, rcpt_attempts=envelope.rcpt_attempts + 1)
    state = replace(state, envelope=envelope)
    if isinstance(path, AddressSyntaxError):
        return _path_refused(state, "RCPT", path)
    refused = first_parameter_problem("RCPT", path.params, persona.smtp_extensions(state.tls))
    if refused is not None:
        return _parameter_refused(state, refused)
    if path.non_ascii and "SMTPUTF8" not in envelope.params:
        return _answer(state, "utf8_not_declared", "utf8-not-declared")
    if len(envelope.recipients) >= policies.max_recipients:
        return _answer(state, "too_many_recipients", "too-many-recipients", address=path.address)
    if helo_refused_at(policies, state.helo, "rcpt"):
        # Postfix, smtpd_delay_reject = yes: the HELO restrictions are evaluated now.
        return _answer(state, "helo_not_fqdn", "helo-not-fqdn", domain=state.helo)
    address = path.address
    if "@" not in address or (address.lower().startswith("postmaster@") and persona.is_local_domain(path.domain)):
        # RFC 5321 4.5.1: every server MUST accept mail for its postmaster.
        local = address if "@" in address else f"postmaster@{_postmaster_domain(persona)}"
        return _accept(state, envelope, path, recipient_key(persona, address), "local", "rcpt_ok", greylist_as=local)
    if persona.is_local_domain(path.domain):
        if persona.find_account(address) is None:
            return _answer(state, "unknown_user", "unknown-user", address=address)
        return _accept(state, envelope, path, recipient_key(persona, address), "local", "rcpt_ok")
    relay = policies.relay
    if relay == "open" or path.domain in persona.relay_domains or (relay == "authenticated" and state.authenticated_as is not None):
        return _accept(state, envelope, path, recipient_key(persona, address), "relay", "rcpt_relay_ok")
    event = Effect(EVENT, {"kind": "relay denied", "detail": address, "address": address})
    return _answer(state, "relay_denied", "relay-denied", (event,), address=address)


def _postmaster_domain(persona: "Profile") -> str:
    return persona.local_domains[0] if persona.local_domains else persona.hostname


def recipient_key(persona: "Profile", address: str) -> str:
    """How the server keeps an accepted recipient (the envelope's entry, a DATA-END fault's argument):
    a local account by its own address, a bare `Postmaster` as postmaster@ the first local domain,
    anything else in lower case.
    """
    if "@" not in address:
        return f"postmaster@{_postmaster_domain(persona)}".lower()
    lowered = address.lower()
    if not lowered.startswith("postmaster@") and persona.is_local_domain(lowered.rpartition("@")[2]):
        account = persona.find_account(address)
        if account is not None:
            return account.address
    return lowered


def recipient_of(persona: "Profile", argument: str) -> str | None:
    """The envelope key an accepted `RCPT TO:` argument adds (None when the grammar refuses it)."""
    path = path_argument(persona, "RCPT", argument)
    return recipient_key(persona, path.address) if isinstance(path, PathArgument) else None


def _accept(
    state: SMTPState, envelope: Envelope, path: PathArgument, stored: str, kind: str, key: str, greylist_as: str | None = None
) -> SMTPDecision:
    """A recipient accepted (once, however often it is named); the server's greylist and quota
    checks (`RECIPIENT_CHECK`) may still turn it away. The parsed path rides along as the detail.
    """
    before = state
    current = getattr(envelope, kind)
    if stored not in current:
        envelope = replace(envelope, **{kind: current + (stored,)})
    state = replace(state, envelope=envelope)
    address = path.address
    check = Effect(RECIPIENT_CHECK, {"sender": envelope.sender, "address": greylist_as or address, "unless": before, "key": stored})
    return Decision((Reply(key, {"address": address}),), state, (check,), "", path)


def greylisted(decision: SMTPDecision, seconds: float) -> SMTPDecision:
    """The first attempt of a (client, sender, recipient) triplet waits (a temporary 4xx)."""
    check = decision.effect(RECIPIENT_CHECK)
    assert check is not None
    event = Effect(EVENT, {"kind": "greylisted", "detail": f"{check['sender'] or '<>'} -> {check['address']}, {seconds:.0f} s to go"})
    return _answer(check["unless"], "greylisted", "greylisted", (event,), address=check["address"], seconds=max(1, round(seconds)))


def mailbox_full(decision: SMTPDecision, temporary: bool) -> SMTPDecision:
    """The server found the accepted recipient's mailbox over its quota: it is not added after all.

    552 5.2.2 (RFC 3463 "mailbox full"), or 452 4.2.2 where the persona's server is set to make
    it temporary (Dovecot's quota_full_tempfail).
    """
    check = decision.effect(RECIPIENT_CHECK)
    assert check is not None
    key = "mailbox_full_temp" if temporary else "mailbox_full"
    event = Effect(EVENT, {"kind": "mailbox full", "detail": check["address"]})
    return _answer(check["unless"], key, "mailbox-full", (event,), address=check["address"])


def _transaction_refusal(state: SMTPState) -> SMTPDecision | None:
    envelope = state.envelope
    if envelope is None:
        return _answer(state, "need_mail", "needs-mail")
    if not envelope.recipients:
        if envelope.rcpt_attempts:
            return _answer(state, "no_valid_recipients", "no-valid-recipients")
        return _answer(state, "need_rcpt", "needs-rcpt")
    return None


def _data(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if argument:
        return _answer(state, "no_arguments", "no-argument-expected", verb="DATA")
    refused = _transaction_refusal(state)
    if refused:
        return refused
    assert state.envelope is not None
    if state.envelope.bdat_used:
        return _answer(state, "data_after_bdat", "data-after-bdat")
    return _answer(state, "data_start", effects=(Effect(START_DATA),))


_BDAT = re.compile(r"(\d{1,18})(?: +(LAST))?", re.IGNORECASE)


def _bdat(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    """BDAT: the reply waits for the chunk, which is read even when the command is refused (RFC 3030 3)."""
    if "CHUNKING" not in persona.smtp_extensions(state.tls):
        return _answer(state, "unknown_command", "not-advertised")
    match = _BDAT.fullmatch(argument)
    if not match:
        return _answer(state, "bdat_syntax", "bdat-syntax")
    size, last = int(match.group(1)), match.group(2) is not None
    refused = _transaction_refusal(state)
    error = refused.replies[0].key if refused else None
    if error is None and state.envelope is not None and state.envelope.bdat_failed:
        error = "bdat_after_failure"
    if state.envelope is not None and error is None:
        state = replace(state, envelope=replace(state.envelope, bdat_used=True))
    return Decision((), state, (Effect(READ_CHUNK, {"size": size, "last": last, "error": error}),))


def chunk_done(state: SMTPState, chunk: Effect, too_big: bool, size: int) -> SMTPDecision:
    """The BDAT chunk is in: the refusal decided at BDAT, 552 over the size limit, 250, or the end."""
    envelope = state.envelope
    error = chunk["error"]
    if error is not None:
        if envelope is not None and error != "need_mail":
            state = replace(state, envelope=replace(envelope, bdat_failed=True))
        return _answer(state, error, "chunk-refused")
    assert envelope is not None
    if too_big:
        return _answer(replace(state, envelope=replace(envelope, bdat_failed=True)), "size_exceeded", "size-exceeded")
    if chunk["last"]:
        return Decision((), state)  # the message is complete: the server delivers it, then replies
    return _answer(state, "bdat_ok", size=size)


def end_of_message(state: SMTPState, persona: "Profile", received: int, size: int | None, has_8bit: bool) -> SMTPDecision:
    """The answer to a complete message, before it is stored; the transaction ends either way.

    `received` counts the octets as they came (dot-stuffing included) against the persona's
    limit (552, RFC 5321 4.5.3.1.10); undeclared 8-bit data gets the persona's answer (RFC 6152 3);
    else 250, whose ids the store fills in (None until then). `size` is the message as stored.
    """
    envelope = state.envelope
    state = replace(state, envelope=None)
    if received > persona.policies.max_message_size:
        return _answer(state, "size_exceeded", "size-exceeded", size=received)
    key = end_of_data_reply(persona.policies, envelope.params if envelope is not None else {}, has_8bit)
    if key == "undeclared_8bit":
        return _answer(state, key, "undeclared-8bit")
    return _answer(state, key, id=None, queue_id=None, number=None, size=size)


def _etrn(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if "ETRN" not in persona.smtp_extensions(state.tls):
        return _answer(state, "unknown_command", "not-advertised")
    if state.envelope is not None:
        return _answer(state, "transaction_in_progress", "transaction-in-progress")
    node = argument.strip()
    domain = node.lstrip("@#")
    if not node or " " in node or not domain:
        return _answer(state, "etrn_syntax", "etrn-syntax")
    return Decision((), state, (Effect(QUEUE_COUNT, {"verb": "ETRN", "node": node, "domains": (domain,)}),))


def _atrn(state: SMTPState, persona: "Profile", argument: str) -> SMTPDecision:
    if not persona.policies.atrn:
        return _answer(state, "atrn_refused", "atrn-refused")
    if state.authenticated_as is None:
        return _answer(state, "atrn_auth_required", "needs-auth")
    domains = tuple(d for d in argument.replace(",", " ").split() if d) or (state.authenticated_as.rpartition("@")[2],)
    return Decision((), state, (Effect(QUEUE_COUNT, {"verb": "ATRN", "node": argument, "domains": domains}),))


def queue_answer(state: SMTPState, query: Effect, count: int) -> SMTPDecision:
    """ETRN/ATRN once the server has counted the mail waiting for the domains."""
    if query["verb"] == "ETRN":
        if count == 0:
            return _answer(state, "etrn_no_mail", node=query["node"])
        return _answer(state, "etrn_started", node=query["node"], count=count)
    return _answer(state, "atrn_no_mail" if count == 0 else "atrn_unable")


_HANDLERS = {
    "HELO": _helo,
    "EHLO": _ehlo,
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _data,
    "BDAT": _bdat,
    "RSET": _rset,
    "NOOP": _noop,
    "VRFY": _vrfy,
    "EXPN": _expn,
    "HELP": _help,
    "QUIT": _quit,
    "STARTTLS": _starttls,
    "AUTH": _auth,
    "ETRN": _etrn,
    "TURN": _turn,
    "ATRN": _atrn,
}
assert set(_HANDLERS) == VERB_NAMES


def render(persona: "Profile", reply: Reply, state: SMTPState, common: dict[str, Any]) -> list[str]:
    """The wire lines of a reply; EHLO adds the capabilities advertised now."""
    if reply.key == "ehlo":
        return persona.ehlo_reply(state.tls, **{**common, **reply.values})
    return persona.smtp(reply.key, **{**common, **reply.values})
