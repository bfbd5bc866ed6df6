"""Check one POP3 line: the protocol core decides, this module explains.

The server's answer comes from `mailprotocol.pop3`, run on a shadow state built from the
client-side session (`shadow_state`), so the prediction is the mock server's own reply, text
included. What is added here is what a teacher adds: which mistake it is, a fix to try, and
advice the server would never give (cleartext logins, deletions applied at QUIT).
"""

from __future__ import annotations

import copy
import re
import string
from typing import Any

from mailprotocol import pop3 as core
from mailprotocol import sasl as core_sasl
from mailprotocol.decision import AUTH_FAILED, LOGIN, REMOVE_MESSAGES, SEND_MESSAGE, Decision, Reply
from mailprotocol.sasl import IMPLEMENTED_MECHANISMS
from mockservers.profile import Profile
from mailprotocol.codec import apop_digest

from mailprotocol import credentials

from .checks import LineCheck, common_values
from .diagnostics import secret_kind
from .prediction import HOLE, Prediction
from .smtp_checks import explain_sasl_step

def shadow_state(session: Any, profile: Profile) -> core.POP3State:
    """The server's state as the client can know it, for the core to decide on."""
    user = session.user if session.user is not None and profile.find_account(session.user) is not None else None
    exchange = None
    if session.auth is not None and session.auth.awaiting_client:
        auth = session.auth
        exchange = core_sasl.Exchange(auth.mechanism, auth.username or None, (auth.challenge or "").encode("utf-8"))
    maildrop = None
    address = None
    if session.logged_in:
        count = session.message_count if session.message_count is not None else count_from_login(session, profile)
        messages = tuple(core.Message(session.sizes.get(n), session.uids.get(n)) for n in range(1, (count or 0) + 1))
        maildrop = core.Maildrop(messages, count, frozenset(session.deleted), frozenset(session.retrieved))
        address = credentials.login_address(profile, session.authenticated_user)
    return core.POP3State(
        phase=core.TRANSACTION if session.logged_in else core.AUTHORIZATION,
        tls=bool(session.tls_active),
        timestamp=session.apop_timestamp or "",
        user=user,
        exchange=exchange,
        address=address,
        maildrop=maildrop,
    )


def predict_decision(profile: Profile, decision: core.POP3Decision, client_ip: str) -> Prediction | None:
    """The lines of a decision; a LOGIN the server completes is predicted as its +OK."""
    login = decision.effect(LOGIN)
    if login is not None:
        state = decision.state
        decision = core.logged_in(state, profile, login, core.Maildrop(count=None))
    if not decision.replies:
        return None
    lines: list[str] = []
    common = common_values(client_ip)
    for reply in decision.replies:
        values = {name: HOLE if value is None else value for name, value in reply.values.items()}
        lines += core.render(profile, Reply(reply.key, values, reply.listing, reply.multiline), common)
    open_ended = decision.has(SEND_MESSAGE) or decision.reason == "listing-unknown"
    if decision.reason == "listing-unknown":
        lines = lines[:-1]  # the "." comes after lines the client has not seen
    return Prediction(tuple(lines), open_ended)


class POP3Check(LineCheck):
    protocol = "pop3"
    other_protocol = "smtp"
    core = core

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.state = shadow_state(self.session, self.profile)
        #: The server's decision for this line; None when the line is not the server's to decide here.
        self.decision: core.POP3Decision | None = None

    def render(self, key: str, values: dict[str, Any]) -> list[str]:
        if key not in self.profile.pop3_replies:
            return []
        return self.profile.pop3(key, **{**common_values(self.client_ip), **values})

    def code_of(self, reply: list[str] | tuple[str, ...]) -> str:
        first = reply[0] if reply else ""
        if first.startswith("-ERR"):
            return "-ERR"
        if first.startswith("+OK"):
            return "+OK"
        return "+" if first.startswith("+") else first[:4]

    def account_now(self) -> str | None:
        if not self.session.logged_in:
            return None
        return credentials.login_address(self.profile, self.session.authenticated_user)

    def blank_state(self) -> core.POP3State:
        return core.POP3State()

    def prediction(self) -> Prediction | None:
        return predict_decision(self.profile, self.decision, self.client_ip) if self.decision else None

    # --- entry point -------------------------------------------------------------------------------

    def command(self) -> None:
        line = self.line
        if self.too_long():
            return
        text = line.strip()
        if line != line.lstrip() and text and "\0" not in line:
            self.add("leading-space", "warning", suggestion=text)
        parsed = core.parse(self.state, self.profile, line)
        if isinstance(parsed, Decision):
            self.decision = parsed
            if parsed.reason == "bad-characters":
                self.add("nul-character", "error")
            else:
                verb_token, _, argument = text.partition(" ")
                self.unknown(verb_token, argument)
            return
        action = self.fault(parsed.verb, parsed.argument)
        if action is not None and self.apply_fault(action, parsed.verb):
            return
        self.decision = core.dispatch(self.state, self.profile, parsed)
        verb, argument, reason = parsed.verb, parsed.argument, self.decision.reason
        if reason not in ("needs-login", "already-logged-in"):
            for word in argument.split() if verb != "PASS" else [argument]:
                if len(word) > core.MAX_ARGUMENT:
                    self.add("pop3-argument-too-long", "warning", limit=core.MAX_ARGUMENT)
                    break
        if verb == "APOP" and reason not in _APOP_GRAMMAR and self.apop_unknown(argument):
            return
        entry = _REFUSALS.get(f"{verb} {reason}") or _REFUSALS.get(reason)
        if entry is not None:
            self.explain_refusal(verb, argument, *entry)
        else:
            getattr(self, f"teach_{verb}", lambda argument: None)(argument)

    def explain_refusal(self, verb: str, argument: str, diagnostic_id: str, suggestion: str | None) -> None:
        """The core refused the line (table `_REFUSALS`): which mistake, and a fix to try."""
        parts = argument.split()
        count = self.decision.state.maildrop.count if self.decision and self.decision.state.maildrop else None
        values: dict[str, Any] = {"verb": verb, "user": argument, "argument": argument or "-", "count": count,
                                  "mechanism": parts[0] if parts else "", "offered": self.profile.pop3_sasl_mechanisms(self.tls) or "-"}
        if diagnostic_id == "message-number-too-high":
            values["number"] = number = int(parts[0])
            diagnostic_id = "message-number-too-high" if number >= 1 else "message-number-zero"
        elif diagnostic_id == "message-deleted":
            values["number"] = int(parts[0])
        elif diagnostic_id == "pass-without-user" and self.session.user is not None:
            diagnostic_id, suggestion, values["user"] = "pass-unknown-user", None, self.session.user
        elif diagnostic_id == "user-unknown" and not self.prediction().lines[0].startswith("-ERR"):  # type: ignore[union-attr]
            self.add("user-unknown-hidden", "warning", user=argument)  # the persona does not tell (RFC 1939 7)
            return
        elif diagnostic_id == "pop3-needs-tls" and not self.profile.pop3_has("STLS", False):
            suggestion = None
        elif diagnostic_id == "apop-digest-length":
            values["length"] = len(parts[1])
            stamp = self.session.apop_timestamp
            suggestion = f"APOP {parts[0]} {apop_digest(stamp, parts[1])}" if stamp else None
        elif diagnostic_id == "pop3-auth-mechanism":
            usable = [m for m in values["offered"] if m in IMPLEMENTED_MECHANISMS]
            suggestion = f"AUTH {usable[0]}" if usable else "USER {example}"
        elif diagnostic_id == "top-syntax":
            values["first"] = parts[0] if parts and parts[0].isdigit() else "1"
        elif diagnostic_id.startswith("auth-"):  # a login the server refuses: why (the web password QQ refuses ...)
            failed = self.decision.effect(AUTH_FAILED) if self.decision is not None else None
            account = failed["verdict"].account if failed is not None else None  # the core's credentials verdict
            values["user"] = self.state.user if verb == "PASS" else (parts[0] if parts else "")
            values["kind"] = secret_kind(account.secret_kind, self.lang) if account is not None else ""
        self.add(diagnostic_id, "error", suggestion=suggestion.format(example=self.example_user(), **values) if suggestion else None, **values)

    def example_user(self) -> str:
        return self.profile.accounts[0].address if self.profile.accounts else "user@example.com"

    def unknown(self, verb_token: str, argument: str) -> None:
        verb = verb_token.upper()
        if not verb_token:
            self.add("empty-line", "error")
            return
        if verb in self.profile.quirks.pop3_unimplemented:
            self.add("command-not-offered", "error", verb=verb)
            return
        self.guess_verb(verb_token, argument, [v.name for v in core.VERBS if v.name not in self.profile.quirks.pop3_unimplemented])

    # --- what a teacher adds when the core accepts ---------------------------------------------------

    def teach_USER(self, argument: str) -> None:  # noqa: N802
        if not self.tls:
            self.add("pop3-cleartext", "info")

    def teach_PASS(self, argument: str) -> None:  # noqa: N802
        if self.decision is not None and self.decision.has(LOGIN) and self.policies.login_delay:
            self.add("pop3-login-delay", "info", seconds=f"{self.policies.login_delay:g}")

    def apop_unknown(self, argument: str) -> bool:
        """Advice on a well-formed APOP; True when its outcome cannot be known (no timestamp seen)."""
        name, digest = argument.split()
        if digest != digest.lower():
            self.add("apop-digest-uppercase", "warning", suggestion=f"APOP {name} {digest.lower()}")
        if self.session.apop_timestamp is None:
            self.decision = None  # the greeting's timestamp was not seen: the outcome is unknown
            self.add("apop-no-timestamp-seen", "info")
        return self.decision is None

    teach_APOP = teach_PASS

    def teach_AUTH(self, argument: str) -> None:  # noqa: N802
        if not argument:
            self.add("pop3-auth-list", "info", offered=self.profile.pop3_sasl_mechanisms(self.tls) or "-")
            return
        parts = argument.split()
        initial = parts[1] if len(parts) > 1 else None
        step = self.decision.detail if self.decision is not None else None  # the core's SASL step
        if isinstance(step, core_sasl.Step) and (step.kind != "challenge" or initial is not None):
            self.sasl_step(step, parts[0].upper(), initial or "")

    def auth_line(self) -> None:
        line = self.line
        if self.too_long():
            return
        self.decision = core.auth_line(self.state, self.profile, line)
        self.sasl_step(self.decision.detail, self.session.auth.mechanism, line)

    def sasl_step(self, step: core_sasl.Step, mechanism: str, line: str) -> None:
        explain_sasl_step(self, step, mechanism, line)
        self.teach_PASS(line)

    def teach_STLS(self, argument: str) -> None:  # noqa: N802
        self.add("starttls-telnet", "info")

    def teach_number(self, argument: str) -> bool:
        count = self.decision.state.maildrop.count if self.decision and self.decision.state.maildrop else None
        if count is None and argument:
            self.add("message-count-unknown", "info", suggestion="STAT")
        return True

    def teach_LIST(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.teach_number(argument)

    teach_UIDL = teach_LIST
    teach_RETR = teach_TOP = teach_number

    def teach_DELE(self, argument: str) -> None:  # noqa: N802
        self.teach_number(argument)
        self.add("dele-marks-only", "info")

    def teach_NOOP(self, argument: str, verb: str = "NOOP") -> None:  # noqa: N802
        if argument:
            self.add("no-argument-ignored", "warning", suggestion=verb, verb=verb)

    def teach_RSET(self, argument: str) -> None:  # noqa: N802
        self.teach_NOOP(argument, "RSET")

    def teach_QUIT(self, argument: str) -> None:  # noqa: N802
        removal = self.decision.effect(REMOVE_MESSAGES) if self.decision is not None else None
        if removal is not None and removal["numbers"]:
            self.add("quit-applies-deletions", "info", count=len(removal["numbers"]))


#: The core's reason for refusing a command ("VERB reason" first, then "reason") -> (diagnostic, fix).
_REFUSALS: dict[str, tuple[str, str | None]] = {
    "already-logged-in": ("pop3-already-logged-in", None),
    "needs-login": ("pop3-needs-login", "USER {example}"),
    "needs-tls": ("pop3-needs-tls", "STLS"),
    "missing-name": ("user-missing-name", "USER {example}"),
    "USER unknown-user": ("user-unknown", None),
    "pass-without-user": ("pass-without-user", "USER {example}"),
    "missing-secret": ("pass-missing", None),
    **{f"{verb} {reason}": (f"auth-{reason}", None) for verb in ("PASS", "APOP")
       for reason in ("unknown-user", "wrong-secret", "web-password")},
    "apop-unavailable": ("apop-unavailable", "USER {example}"),
    "apop-syntax": ("apop-syntax", "APOP {example} <32 hex digits>"),
    "apop-digest-length": ("apop-digest-length", None),
    "apop-digest-not-hex": ("apop-digest-not-hex", None),
    "mechanism-not-offered": ("pop3-auth-mechanism", None),
    "tls-already": ("stls-already", None),
    "no-argument-expected": ("no-argument-expected", "{verb}"),
    "stls-not-offered": ("stls-not-offered", None),
    "number-invalid": ("message-number-invalid", None),
    "number-out-of-range": ("message-number-too-high", None),
    "message-deleted": ("message-deleted", "RSET"),
    "top-syntax": ("top-syntax", "TOP {first} 10"),
}
_APOP_GRAMMAR = {"apop-unavailable", "apop-syntax", "apop-digest-length", "apop-digest-not-hex", "needs-login", "already-logged-in", "needs-tls"}


def count_from_login(session: Any, profile: Profile) -> int | None:
    """Read the message count out of the login reply, using the persona's own template."""
    for exchange in reversed(session.history):
        reply = exchange.reply
        if getattr(reply, "kind", None) != "ok" or not reply.raw:
            continue
        verb = (exchange.after or "").split(" ")[0].upper()
        if exchange.kind == "auth-response" or verb in core.LOGIN_VERBS:
            for key in ("pass_ok", "apop_ok", "auth_ok"):
                count = _template_count(profile.pop3_replies.get(key, ("",))[0], reply.raw[0])
                if count is not None:
                    return count
            return None
    return None


def _template_count(template: str, line: str) -> int | None:
    if "{count}" not in template:
        return None
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(template):
        pattern += re.escape(literal)
        if name == "count":
            pattern += r"(?P<count>\d+)"
        elif name is not None:
            pattern += r".*?"
    match = re.fullmatch(pattern, line)
    return int(match.group("count")) if match else None


def assume_success(session: Any) -> Any:
    """A copy of a POP3 session whose pending commands all got +OK (to plan the next line)."""
    twin = copy.deepcopy(session)
    while twin._pending:
        item = twin._pending[0]
        twin.received(["+OK", "."] if item.multiline else ["+OK"])
    return twin


__all__ = ["HOLE", "POP3Check", "Prediction", "assume_success", "count_from_login", "predict_decision", "shadow_state"]
