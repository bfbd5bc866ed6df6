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
from mailprotocol.decision import LOGIN, REMOVE_MESSAGES, SEND_MESSAGE, Decision, Reply
from mailprotocol.sasl import IMPLEMENTED_MECHANISMS
from mockservers.faults import SMTP_COMMANDS
from mockservers.profile import Profile
from mockservers.sasl import apop_digest

from .checks import LineCheck, check_login, common_values, logged_in_address, nearest_verb, sasl_respond, sasl_start
from .diagnostics import secret_kind
from .prediction import HOLE, Prediction
from .smtp_checks import explain_sasl_outcome

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
        address = logged_in_address(profile, session.authenticated_user)
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

    @property
    def policies(self) -> Any:
        return self.profile.policies

    @property
    def tls(self) -> bool:
        return bool(self.session.tls_active)

    def account_now(self) -> str | None:
        if not self.session.logged_in:
            return None
        return logged_in_address(self.profile, self.session.authenticated_user)

    def server_verb(self, text: str) -> tuple[str, str] | None:
        if len(text.encode("utf-8", "surrogateescape")) + 2 > self.policies.max_pop3_line:
            return None
        parsed = core.parse(core.POP3State(), self.profile, text)
        return None if isinstance(parsed, Decision) else (parsed.verb, parsed.argument)

    def prediction(self) -> Prediction | None:
        return predict_decision(self.profile, self.decision, self.client_ip) if self.decision else None

    def refuse(self, diagnostic_id: str, severity: str = "error", **values: Any) -> None:
        """A diagnostic carrying the core's reply to this line."""
        prediction = self.prediction()
        self.add(diagnostic_id, severity, reply=prediction.shown() if prediction else None, **values)  # type: ignore[arg-type]

    # --- entry point -------------------------------------------------------------------------------

    def run(self) -> None:
        session = self.session
        if session.closed:
            self.add("session-closed", "error")
            return
        if session.tls_pending:
            self.add("tls-handshake-pending", "error")
            return
        if session.greeting is None:
            self.add("spoke-before-greeting", "warning")
        if session.auth is not None and session.auth.awaiting_client:
            self.auth_line()
            return
        self.command()

    def command(self) -> None:
        line = self.line
        octets = len(line.encode("utf-8", "surrogateescape"))
        limit = core.line_limit(self.state, self.profile)
        if octets + 2 > limit:
            self.decision = core.line_too_long(self.state)
            self.refuse("line-too-long", length=octets + 2, limit=limit)
            return
        text = line.strip()
        if line != line.lstrip() and text and "\0" not in line:
            self.add("leading-space", "warning", suggestion=text)
        parsed = core.parse(self.state, self.profile, line)
        if isinstance(parsed, Decision):
            self.decision = parsed
            if parsed.reason == "bad-characters":
                self.refuse("nul-character")
            else:
                verb_token, _, argument = text.partition(" ")
                self.unknown(verb_token, argument)
            return
        action = self.fault(parsed.verb, parsed.argument)
        if action is not None and self.apply_fault(action, parsed.verb):
            return
        self.decision = core.dispatch(self.state, self.profile, parsed)
        reason = self.decision.reason
        if reason == "already-logged-in":
            self.refuse("pop3-already-logged-in", verb=parsed.verb)
            return
        if reason == "needs-login":
            self.refuse("pop3-needs-login", suggestion="USER " + self.example_user(), verb=parsed.verb)
            return
        for word in parsed.argument.split() if parsed.verb != "PASS" else [parsed.argument]:
            if len(word) > core.MAX_ARGUMENT:
                self.add("pop3-argument-too-long", "warning", limit=core.MAX_ARGUMENT)
                break
        if reason == "needs-tls":
            stls = self.profile.pop3_has("STLS", False)
            self.refuse("pop3-needs-tls", suggestion="STLS" if stls else None)
            return
        getattr(self, f"explain_{parsed.verb}")(parsed.argument, self.decision)

    def example_user(self) -> str:
        return self.profile.accounts[0].address if self.profile.accounts else "user@example.com"

    def unknown(self, verb_token: str, argument: str) -> None:
        verb = verb_token.upper()
        if not verb_token:
            self.refuse("empty-line")
            return
        if verb in self.profile.quirks.pop3_unimplemented:
            self.refuse("command-not-offered", verb=verb)
            return
        letters = re.match(r"[A-Za-z]*", verb_token).group(0).upper()  # type: ignore[union-attr]
        if letters in SMTP_COMMANDS - core.VERB_NAMES:
            self.refuse("smtp-command-in-pop3", verb=letters)
            return
        offered = [v.name for v in core.VERBS if v.name not in self.profile.quirks.pop3_unimplemented]
        near = nearest_verb(letters or verb, offered)
        if near is not None:
            self.refuse("unknown-verb", suggestion=f"{near} {argument}".strip(), verb=verb_token, nearest=near)
        else:
            self.refuse("unknown-verb-no-guess", verb=verb_token)

    # --- AUTHORIZATION -----------------------------------------------------------------------------

    def explain_USER(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if decision.reason == "missing-name":
            self.refuse("user-missing-name", suggestion="USER " + self.example_user())
        elif decision.reason == "unknown-user":
            prediction = self.prediction()
            if prediction and prediction.lines[0].startswith("-ERR"):
                self.refuse("user-unknown", user=argument)
            else:
                self.add("user-unknown-hidden", "warning", user=argument)
        elif not self.tls:
            self.add("pop3-cleartext", "info")

    def explain_PASS(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if decision.reason == "pass-without-user":
            if self.session.user is not None:
                self.refuse("pass-unknown-user", user=self.session.user)
            else:
                self.refuse("pass-without-user", suggestion="USER " + self.example_user())
        elif decision.reason == "missing-secret":
            self.refuse("pass-missing")
        else:
            self.login_verdict(self.state.user or "", lambda secret: secret == argument)

    def login_verdict(self, user: str, check: Any) -> None:
        """Why a login fails (the web password QQ refuses, a wrong secret ...), or what comes next."""
        decision = self.decision
        assert decision is not None
        if decision.has(LOGIN):
            if self.policies.login_delay:
                self.add("pop3-login-delay", "info", seconds=f"{self.policies.login_delay:g}")
            return
        verdict = check_login(self.profile, user, check)
        if verdict.diagnostic == "auth-web-password" and verdict.account is not None:
            self.refuse("auth-web-password", user=user, kind=secret_kind(verdict.account.secret_kind, self.lang))
        else:
            self.refuse(verdict.diagnostic, user=user)

    def explain_APOP(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        reason = decision.reason
        parts = argument.split()
        timestamp = self.session.apop_timestamp
        if reason == "apop-unavailable":
            self.refuse("apop-unavailable", suggestion="USER " + self.example_user())
        elif reason == "apop-syntax":
            self.refuse("apop-syntax", suggestion=f"APOP {self.example_user()} <32 hex digits>")
        elif reason == "apop-digest-length":
            suggestion = f"APOP {parts[0]} {apop_digest(timestamp, parts[1])}" if timestamp else None
            self.refuse("apop-digest-length", suggestion=suggestion, length=len(parts[1]))
        elif reason == "apop-digest-not-hex":
            self.refuse("apop-digest-not-hex")
        else:
            name, digest = parts
            if digest != digest.lower():
                self.add("apop-digest-uppercase", "warning", suggestion=f"APOP {name} {digest.lower()}")
            if timestamp is None:
                self.decision = None  # the greeting's timestamp was not seen: the outcome is unknown
                self.add("apop-no-timestamp-seen", "info")
                return
            self.login_verdict(name, lambda secret: apop_digest(timestamp, secret) == digest.lower())

    def explain_AUTH(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        mechanisms = self.profile.pop3_sasl_mechanisms(self.tls)
        if not argument:
            self.add("pop3-auth-list", "info", offered=mechanisms or "-")
            return
        parts = argument.split()
        mechanism = parts[0].upper()
        if decision.reason == "mechanism-not-offered":
            usable = [m for m in mechanisms if m in IMPLEMENTED_MECHANISMS]
            self.refuse(
                "pop3-auth-mechanism",
                suggestion=f"AUTH {usable[0]}" if usable else "USER " + self.example_user(),
                mechanism=parts[0], offered=mechanisms or "-",
            )
            return
        initial = parts[1] if len(parts) > 1 else None
        outcome = sasl_start(mechanism, initial, None)
        if outcome.kind != "challenge" or initial is not None:
            self.sasl_outcome(outcome, mechanism, initial or "")

    def auth_line(self) -> None:
        exchange = self.session.auth
        line = self.line
        octets = len(line.encode("utf-8", "surrogateescape"))
        limit = core.line_limit(self.state, self.profile)
        if octets + 2 > limit:
            self.decision = core.line_too_long(self.state)
            self.refuse("line-too-long", length=octets + 2, limit=limit)
            return
        self.decision = core.auth_line(self.state, self.profile, line)
        outcome = sasl_respond(exchange.mechanism, line, username=exchange.username or None, challenge=exchange.challenge)
        self.sasl_outcome(outcome, exchange.mechanism, line)

    def sasl_outcome(self, outcome: Any, mechanism: str, line: str) -> None:
        explain_sasl_outcome(self, outcome, mechanism, line, fail_key="auth_failed")
        if self.decision is not None and self.decision.has(LOGIN) and self.policies.login_delay:
            self.add("pop3-login-delay", "info", seconds=f"{self.policies.login_delay:g}")

    def explain_STLS(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if decision.reason == "tls-already":
            self.refuse("stls-already")
        elif decision.reason == "no-argument-expected":
            self.refuse("no-argument-expected", suggestion="STLS", verb="STLS")
        elif decision.reason == "stls-not-offered":
            self.refuse("stls-not-offered")
        else:
            self.add("starttls-telnet", "info")

    def explain_CAPA(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        pass

    # --- TRANSACTION -------------------------------------------------------------------------------

    def explain_number(self, argument: str, decision: core.POP3Decision) -> bool:
        """Explain a refused message number; True when the number was usable."""
        count = decision.state.maildrop.count if decision.state.maildrop else None
        reason = decision.reason
        if reason == "number-invalid":
            self.refuse("message-number-invalid", argument=argument or "-")
        elif reason == "number-out-of-range":
            number = int(argument)
            if number < 1:
                self.refuse("message-number-zero")
            else:
                self.refuse("message-number-too-high", number=number, count=count)
        elif reason == "message-deleted":
            self.refuse("message-deleted", suggestion="RSET", number=int(argument))
        else:
            if count is None:
                self.add("message-count-unknown", "info", suggestion="STAT")
            return True
        return False

    def explain_STAT(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if decision.reason == "no-argument-expected":
            self.refuse("no-argument-expected", suggestion="STAT", verb="STAT")

    def explain_LIST(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if argument:
            self.explain_number(argument, decision)

    explain_UIDL = explain_LIST

    def explain_RETR(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        self.explain_number(argument, decision)

    def explain_DELE(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if self.explain_number(argument, decision):
            self.add("dele-marks-only", "info")

    def explain_TOP(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if decision.reason == "top-syntax":
            parts = argument.split()
            first = parts[0] if parts and parts[0].isdigit() else "1"
            self.refuse("top-syntax", suggestion=f"TOP {first} 10")
        else:
            self.explain_number(argument.split()[0], decision)

    def explain_NOOP(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if argument:
            self.add("no-argument-ignored", "warning", suggestion="NOOP", verb="NOOP")

    def explain_RSET(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        if argument:
            self.add("no-argument-ignored", "warning", suggestion="RSET", verb="RSET")

    def explain_QUIT(self, argument: str, decision: core.POP3Decision) -> None:  # noqa: N802
        removal = decision.effect(REMOVE_MESSAGES)
        if removal is not None and removal["numbers"]:
            self.add("quit-applies-deletions", "info", count=len(removal["numbers"]))


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
