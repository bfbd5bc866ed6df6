"""POP3 (RFC 1939, 2449 CAPA, 2595 STLS, 3206 response codes, 5034 SASL): the verb table, the states
and every decision, as pure functions.

`decide(state, persona, line)` is the server's answer to one line. The Twisted session
(`mockservers.pop3`) asks it and carries out the effects; the validator asks it on a shadow state
and so predicts the server's reply, text included. Between `parse` and `dispatch` a server may
apply an instructor's fault script (both sides count it the same way).

States: AUTHORIZATION -> TRANSACTION (after a login whose maildrop could be locked and opened)
-> UPDATE (only through QUIT). Deletions are marks until QUIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .codec import apop_digest

from . import credentials, sasl
from .decision import (
    AUTH_FAILED,
    CLOSE,
    LOGIN,
    REMOVE_MESSAGES,
    SEND_MESSAGE,
    START_SASL,
    START_TLS,
    Decision,
    Effect,
    Reply,
    argument_of,
    replace,
)

if TYPE_CHECKING:
    from mockservers.profile import Profile

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"
#: RFC 1939 3: arguments may be up to 40 characters long.
MAX_ARGUMENT = 40


@dataclass(frozen=True)
class Verb:
    """One row of the verb table.

    `capability` is the CAPA tag that announces the verb ("" when every server has it, RFC 2449 6);
    `multiline` is "never", "always" or "without-argument" (a +OK followed by lines and ".");
    `knowledge` is the entry in simulator/knowledge/pop3_commands.toml that explains it.
    """

    name: str
    grammar: str
    states: frozenset[str]
    capability: str = ""
    multiline: str = "never"
    logs_in: bool = False  # carries a secret (masked in transcripts)
    starts_tls: bool = False  # accepted, the session starts over in TLS (RFC 2595 4)
    waits_for_reply: bool = False  # changes the state: even a pipelining client waits (RFC 2449 6.6)

    @property
    def argument(self) -> str:
        """ "none", "optional" or "required", read from the grammar."""
        return argument_of(self.name, self.grammar)

    @property
    def knowledge(self) -> str:
        return f"commands.{self.name}"


_AUTH = frozenset({AUTHORIZATION})
_TRANS = frozenset({TRANSACTION})
_BOTH = frozenset({AUTHORIZATION, TRANSACTION})

#: Every POP3 verb, most useful first (the order "did you mean ...?" prefers).
VERBS: tuple[Verb, ...] = (
    Verb("USER", "USER name", _AUTH, "USER", waits_for_reply=True),
    Verb("PASS", "PASS secret", _AUTH, "USER", logs_in=True, waits_for_reply=True),
    Verb("STAT", "STAT", _TRANS),
    Verb("LIST", "LIST [msg]", _TRANS, multiline="without-argument"),
    Verb("RETR", "RETR msg", _TRANS, multiline="always"),
    Verb("DELE", "DELE msg", _TRANS),
    Verb("TOP", "TOP msg n", _TRANS, "TOP", multiline="always"),
    Verb("UIDL", "UIDL [msg]", _TRANS, "UIDL", multiline="without-argument"),
    Verb("QUIT", "QUIT", _BOTH, waits_for_reply=True),
    Verb("RSET", "RSET", _TRANS),
    Verb("NOOP", "NOOP", _TRANS),
    Verb("CAPA", "CAPA", _BOTH, multiline="always"),
    Verb("APOP", "APOP name digest", _AUTH, logs_in=True, waits_for_reply=True),
    Verb("AUTH", "AUTH [mechanism [initial-response]]", _AUTH, "SASL", multiline="without-argument", logs_in=True, waits_for_reply=True),
    Verb("STLS", "STLS", _AUTH, "STLS", waits_for_reply=True, starts_tls=True),
)
VERB_TABLE: dict[str, Verb] = {verb.name: verb for verb in VERBS}
VERB_NAMES: frozenset[str] = frozenset(VERB_TABLE)
LOGIN_VERBS: frozenset[str] = frozenset(verb.name for verb in VERBS if verb.logs_in)
WAITS_FOR_REPLY: frozenset[str] = frozenset(verb.name for verb in VERBS if verb.waits_for_reply)
#: CAPA tags that are not shown in TRANSACTION (they only matter before a login).
_LOGIN_TAGS = ("STLS", "USER", "SASL")


def verbs_allowed(phase: str) -> list[str]:
    """The verbs a client may send in `phase`, in table order."""
    return [verb.name for verb in VERBS if phase in verb.states]


def multiline_reply(verb: str, argument: str) -> bool:
    """Whether a +OK to this command is followed by lines and a final "."."""
    row = VERB_TABLE.get(verb.upper())
    if row is None:
        return False
    return row.multiline == "always" or (row.multiline == "without-argument" and not argument.strip())


# --- state -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message as the session sees it; None when only the live server knows."""

    size: int | None = None
    uid: str | None = None


@dataclass(frozen=True)
class Maildrop:
    """The messages as they were at login, with deletion and retrieval marks (1-based numbers).

    `count` is None when the client does not know how many messages there are.
    """

    messages: tuple[Message, ...] = ()
    count: int | None = 0
    deleted: frozenset[int] = frozenset()
    retrieved: frozenset[int] = frozenset()

    @classmethod
    def of(cls, messages: tuple[Message, ...]) -> "Maildrop":
        return cls(messages, len(messages))

    def message(self, number: int) -> Message:
        if 1 <= number <= len(self.messages):
            return self.messages[number - 1]
        return Message()

    def live(self) -> list[tuple[int, Message]]:
        return [(n, self.message(n)) for n in range(1, (self.count or 0) + 1) if n not in self.deleted]

    def totals(self) -> tuple[int | None, int | None]:
        """(messages, octets) not marked deleted; None where unknown."""
        if self.count is None:
            return None, None
        live = self.live()
        sizes = [m.size for _, m in live]
        return len(live), None if None in sizes else sum(s for s in sizes if s is not None)


@dataclass(frozen=True)
class POP3State:
    """Everything a POP3 decision depends on in one session.

    `timestamp` is the greeting's APOP timestamp; `tls_available` is false on a server without a
    certificate; `address` is the mailbox after a login. A server sets a fresh `challenge` before each
AUTH; a prediction leaves it empty and shows the challenge as unknown.
    """

    phase: str = AUTHORIZATION
    tls: bool = False
    tls_available: bool = True
    timestamp: str = ""
    user: str | None = None
    exchange: sasl.Exchange | None = None
    address: str | None = None
    maildrop: Maildrop | None = None
    challenge: bytes = b""  # the CRAM-MD5 challenge the server would send now (b"": unknown)


@dataclass(frozen=True)
class Command:
    """A line the server dispatches: the verb (upper case) and its argument (stripped)."""

    verb: str
    argument: str


POP3Decision = Decision[POP3State]


def _answer(state: POP3State, key: str, why: str = "", effects: tuple[Effect, ...] = (), **values: object) -> POP3Decision:
    """One reply; `why` becomes the decision's reason (`values` may hold a `{reason}` placeholder)."""
    return Decision((Reply(key, dict(values)),), state, effects, why)


# --- the line ----------------------------------------------------------------------------------------


def line_limit_for(state: POP3State, persona: "Profile", start: bytes) -> int:
    """Octets (CRLF included) a line may take before the server's framing discards it unread, also
    what the validator holds a typed line to; an AUTH exchange carries base64, so it may be longer.
    The same whatever the line starts with, unlike SMTP's MAIL."""
    policies = persona.policies
    return policies.max_auth_line if state.exchange else policies.max_pop3_line


def line_too_long(state: POP3State, limit: int | None = None) -> POP3Decision:
    """A line over the limit is discarded (and ends an AUTH exchange); the limit, when known, is the detail."""
    return Decision((Reply("line_too_long"),), replace(state, exchange=None), (), "line-too-long", limit)


def bad_characters(state: POP3State) -> POP3Decision:
    """A line that is not UTF-8 or carries NUL."""
    return _answer(state, "bad_characters", "bad-characters")


def greeting(state: POP3State) -> POP3Decision:
    return _answer(state, "greeting", timestamp=state.timestamp)


def apop_available(persona: "Profile") -> bool:
    """APOP works when the greeting carries a `{timestamp}` (RFC 1939 7)."""
    return "{timestamp}" in persona.pop3_greeting


def parse(state: POP3State, persona: "Profile", line: str) -> Command | POP3Decision:
    """The command on a line, or the decision when the line is not dispatched as one."""
    if state.exchange is not None:
        return auth_line(state, persona, line)
    if "\0" in line:
        return bad_characters(state)
    verb, _, argument = line.strip().partition(" ")
    verb = verb.upper()
    if verb not in VERB_NAMES or verb in persona.quirks.pop3_unimplemented:
        return _answer(state, "unknown_command", "unknown-command")
    return Command(verb, argument.strip())


def decide(state: POP3State, persona: "Profile", line: str) -> POP3Decision:
    """The server's answer to one line (without a fault script)."""
    parsed = parse(state, persona, line)
    if isinstance(parsed, Decision):
        return parsed
    return dispatch(state, persona, parsed)


def dispatch(state: POP3State, persona: "Profile", command: Command) -> POP3Decision:
    """A known command: refused in the wrong state, else decided by its verb."""
    if state.phase not in VERB_TABLE[command.verb].states:
        why = "needs-login" if state.phase == AUTHORIZATION else "already-logged-in"
        return _answer(state, "wrong_state", why)
    return _HANDLERS[command.verb](state, persona, command.argument)


# --- AUTHORIZATION ------------------------------------------------------------------------------------


def _tls_refusal(state: POP3State, persona: "Profile") -> POP3Decision | None:
    if persona.policies.require_tls_for_auth and not state.tls:
        return _answer(state, "tls_required", "needs-tls")
    return None


def _user(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    if not argument:
        return _answer(state, "user_syntax", "missing-name")
    refused = _tls_refusal(state, persona)
    if refused:
        return refused
    if persona.find_account(argument) is None and not persona.policies.hide_unknown_users:
        return _answer(replace(state, user=None), "user_unknown", "unknown-user", user=argument)
    # Most real servers (Dovecot, Gmail, Coremail...) answer alike and refuse at PASS, so USER
    # cannot be used to find out which mailboxes exist.
    return _answer(replace(state, user=argument), "user_ok", user=argument)


def _pass(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    if state.user is None:
        return _answer(state, "pass_without_user", "pass-without-user")
    if not argument:
        return _answer(state, "pass_syntax", "missing-secret")
    user = state.user
    return _login(replace(state, user=None), persona, user, lambda secret: secret == argument, "pass_ok", "pass_failed")


def _apop(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    if not apop_available(persona):
        return _answer(state, "apop_unavailable", "apop-unavailable")
    parts = argument.split()
    if len(parts) != 2:
        return _answer(state, "apop_syntax", "apop-syntax")
    if len(parts[1]) != 32:
        return _answer(state, "apop_syntax", "apop-digest-length")
    if any(c not in "0123456789abcdefABCDEF" for c in parts[1]):
        return _answer(state, "apop_syntax", "apop-digest-not-hex")
    refused = _tls_refusal(state, persona)
    if refused:
        return refused
    name, digest = parts[0], parts[1].lower()
    timestamp = state.timestamp
    return _login(state, persona, name, lambda secret: apop_digest(timestamp, secret) == digest, "apop_ok", "apop_failed")


def _auth(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    mechanisms = persona.pop3_sasl_mechanisms(state.tls)
    if not argument:
        return Decision((Reply("auth_mechanisms", listing=tuple(mechanisms), multiline=True),), state)
    refused = _tls_refusal(state, persona)
    if refused:
        return refused
    parts = argument.split()
    mechanism = parts[0].upper()
    if mechanism not in mechanisms or len(parts) > 2:
        return _answer(state, "auth_unknown_mechanism", "mechanism-not-offered", mechanism=parts[0])
    return _auth_step(state, persona, sasl.start(mechanism, parts[1] if len(parts) > 1 else None, state.challenge))


def auth_line(state: POP3State, persona: "Profile", line: str) -> POP3Decision:
    """One client line of an AUTH exchange."""
    assert state.exchange is not None
    return _auth_step(state, persona, sasl.respond(state.exchange, line))


def _auth_step(state: POP3State, persona: "Profile", step: sasl.Step) -> POP3Decision:
    """The decision on one SASL step; the step rides along as the detail (what the line decoded to)."""
    return replace(_sasl_answer(state, persona, step), detail=step)


def _sasl_answer(state: POP3State, persona: "Profile", step: sasl.Step) -> POP3Decision:
    if step.kind == "challenge":
        return Decision((Reply(step.key, dict(step.values)),), replace(state, exchange=step.exchange), (Effect(START_SASL),))
    state = replace(state, exchange=None)
    if step.kind == "error":
        return _answer(state, step.key, "auth-" + step.problem if step.problem else "auth-error", **step.values)
    assert step.check is not None
    return _login(state, persona, step.user, step.check, "auth_ok", "auth_failed")


def _login(state: POP3State, persona: "Profile", user: str, check: object, ok_key: str, fail_key: str) -> POP3Decision:
    """Credentials checked: a refusal now, or a LOGIN effect the server completes (limits, lock, open)."""
    verdict = credentials.check_login(persona, user, check)  # type: ignore[arg-type]
    if not verdict.ok:
        effect = Effect(AUTH_FAILED, {"user": user, "reason": verdict.describe(), "verdict": verdict})
        return _answer(state, fail_key, verdict.reason, (effect,), user=user)
    effect = Effect(LOGIN, {"address": verdict.address, "user": user, "ok_key": ok_key, "verdict": verdict})
    return Decision((), state, (effect,))


def logged_in(state: POP3State, persona: "Profile", login: Effect, maildrop: Maildrop) -> POP3Decision:
    """The maildrop is locked and open: TRANSACTION, and the +OK with its totals."""
    state = replace(state, phase=TRANSACTION, address=login["address"], maildrop=maildrop, user=None)
    count, size = maildrop.totals()
    return _answer(state, login["ok_key"], user=login["user"], count=count, size=size)


def login_delayed(state: POP3State, login: Effect, seconds: float) -> POP3Decision:
    """RFC 2449 LOGIN-DELAY: this mailbox logged in too recently."""
    return _answer(state, "login_delay", "login-delay", seconds=max(1, round(seconds)), user=login["user"])


def maildrop_in_use(state: POP3State, login: Effect) -> POP3Decision:
    """Another session holds the maildrop (RFC 1939 8: one session per maildrop)."""
    return _answer(state, "in_use", "in-use", user=login["user"])


def too_many_failures(state: POP3State, persona: "Profile", failures: int) -> POP3Decision | None:
    """After a failed login: the persona's limit on failures from one client, when reached."""
    limit = persona.policies.max_auth_failures
    if limit and failures >= limit:
        return _answer(state, "too_many_auth_failures", "too-many-failures", (Effect(CLOSE),))
    return None


def locked_out(state: POP3State) -> POP3Decision:
    """Too many failed logins from this client lately (the server's memory, `auth_lockout_failures`):
    the outcome of a login is never told, nor a login completed, and the connection ends.
    """
    return _answer(replace(state, exchange=None, user=None), "too_many_auth_failures", "auth-locked-out", (Effect(CLOSE),))


def _stls(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    if state.tls:
        return _answer(state, "stls_active", "tls-already")
    if argument:
        return _answer(state, "no_arguments", "no-argument-expected", verb="STLS")
    if not state.tls_available or not persona.pop3_has("STLS", False):
        return _answer(state, "stls_unavailable", "stls-not-offered")
    return _answer(replace(state, tls=True, user=None), "stls_ok", effects=(Effect(START_TLS),))


def capa_lines(state: POP3State, persona: "Profile") -> list[str]:
    """The CAPA tags shown now: STLS, USER and SASL only before a login."""
    lines = persona.pop3_capa_lines(state.tls)
    if state.phase == TRANSACTION:
        lines = [line for line in lines if line.split()[0].upper() not in _LOGIN_TAGS]
    return lines


def _capa(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    return Decision((Reply("capa", listing=tuple(capa_lines(state, persona)), multiline=True),), state)


# --- TRANSACTION --------------------------------------------------------------------------------------


def _drop(state: POP3State) -> Maildrop:
    assert state.maildrop is not None
    return state.maildrop


def _message(state: POP3State, argument: str) -> int | POP3Decision:
    """A message number the client may use, or the refusal saying why not."""
    maildrop = _drop(state)
    count = maildrop.count
    if not argument.isdigit() or len(argument) > 10:
        return _answer(state, "bad_number", "number-invalid", argument=argument, count=count)
    number = int(argument)
    if number < 1 or (count is not None and number > count):
        return _answer(state, "no_such_message", "number-out-of-range", number=number, count=count)
    if number in maildrop.deleted:
        return _answer(state, "message_deleted", "message-deleted", number=number)
    return number


def _stat(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    if argument:
        return _answer(state, "no_arguments", "no-argument-expected", verb="STAT")
    count, size = _drop(state).totals()
    return _answer(state, "stat", count=count, size=size)


def _listing(state: POP3State, argument: str, one_key: str, header_key: str, field_name: str) -> POP3Decision:
    maildrop = _drop(state)
    if argument:
        found = _message(state, argument)
        if isinstance(found, Decision):
            return found
        value = getattr(maildrop.message(found), field_name)
        return _answer(state, one_key, number=found, **{field_name: value})
    count, size = maildrop.totals()
    entries = [(n, getattr(m, field_name)) for n, m in maildrop.live()]
    known = maildrop.count is not None and all(value is not None for _, value in entries)
    lines = tuple(f"{n} {value}" for n, value in entries) if known else ()
    reply = Reply(header_key, {"count": count, "size": size}, lines, multiline=True)
    return Decision((reply,), state, reason="" if known else "listing-unknown")


def _list(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    return _listing(state, argument, "list_one", "list_header", "size")


def _uidl(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    return _listing(state, argument, "uidl_one", "uidl_header", "uid")


def _retr(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    found = _message(state, argument)
    if isinstance(found, Decision):
        return found
    maildrop = _drop(state)
    state = replace(state, maildrop=replace(maildrop, retrieved=maildrop.retrieved | {found}))
    effect = Effect(SEND_MESSAGE, {"number": found, "body_lines": None})
    reply = Reply("retr", {"number": found, "size": maildrop.message(found).size})
    return Decision((reply,), state, (effect,))


def _top(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    parts = argument.split()
    if len(parts) != 2 or not parts[1].isdigit():
        return _answer(state, "top_syntax", "top-syntax")
    found = _message(state, parts[0])
    if isinstance(found, Decision):
        return found
    effect = Effect(SEND_MESSAGE, {"number": found, "body_lines": int(parts[1])})
    reply = Reply("top", {"number": found, "size": _drop(state).message(found).size})
    return Decision((reply,), state, (effect,))


def _dele(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    found = _message(state, argument)
    if isinstance(found, Decision):
        return found
    maildrop = _drop(state)
    return _answer(replace(state, maildrop=replace(maildrop, deleted=maildrop.deleted | {found})), "dele", number=found)


def _noop(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    return _answer(state, "noop")


def _rset(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    state = replace(state, maildrop=replace(_drop(state), deleted=frozenset()))
    count, size = _drop(state).totals()
    return _answer(state, "rset", count=count, size=size)


def _quit(state: POP3State, persona: "Profile", argument: str) -> POP3Decision:
    """QUIT: in TRANSACTION the UPDATE state removes the marked messages before the +OK."""
    if state.phase != TRANSACTION or state.maildrop is None:
        return _answer(state, "quit", effects=(Effect(CLOSE),))
    maildrop = state.maildrop
    doomed = set(maildrop.deleted)
    if persona.policies.expire_days == 0:
        doomed |= maildrop.retrieved  # EXPIRE 0: a retrieved message is gone after QUIT (RFC 2449 6.7)
    remaining = None if maildrop.count is None else maildrop.count - len(doomed)
    key = "quit_update" if remaining is None or remaining else "quit_update_empty"
    effects = (Effect(REMOVE_MESSAGES, {"numbers": tuple(sorted(doomed))}), Effect(CLOSE))
    return _answer(replace(state, phase=UPDATE), key, effects=effects, remaining=remaining)


def update_failed(state: POP3State) -> POP3Decision:
    """The marked messages could not be removed (RFC 1939 6: -ERR, some may remain)."""
    return _answer(state, "quit_failed", "update-failed", (Effect(CLOSE),))


_HANDLERS = {
    "USER": _user,
    "PASS": _pass,
    "APOP": _apop,
    "AUTH": _auth,
    "STLS": _stls,
    "CAPA": _capa,
    "STAT": _stat,
    "LIST": _list,
    "UIDL": _uidl,
    "RETR": _retr,
    "TOP": _top,
    "DELE": _dele,
    "NOOP": _noop,
    "RSET": _rset,
    "QUIT": _quit,
}
assert set(_HANDLERS) == VERB_NAMES


# --- rendering ----------------------------------------------------------------------------------------


def render(persona: "Profile", reply: Reply, common: dict[str, object]) -> list[str]:
    """The wire lines of a reply (the persona's text, then any listing and the final ".").

    A message's content (RETR, TOP) is not a listing: the SEND_MESSAGE effect writes it.
    """
    lines = persona.pop3(reply.key, **{**common, **reply.values})
    if reply.multiline:
        return lines + list(reply.listing) + ["."]
    return lines


def closes(persona: "Profile", decision: POP3Decision) -> bool:
    """Whether the server closes the connection after this decision's replies."""
    return decision.has(CLOSE) or any(reply.key in persona.pop3_close_after for reply in decision.replies)
