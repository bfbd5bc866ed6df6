"""Check one POP3 line against the client-side session and the persona: the server's decisions.

Mirrors `mockservers.pop3.POP3Session`: line length, the keyword, the state (AUTHORIZATION or
TRANSACTION), then one method per command; AUTH lines go through the same SASL decoding as SMTP.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from mockservers.faults import POP3_COMMANDS, SMTP_COMMANDS
from mockservers.profile import Profile
from mockservers.sasl import apop_digest

from .checks import (
    IMPLEMENTED_MECHANISMS,
    LineCheck,
    check_login,
    common_values,
    logged_in_address,
    nearest_verb,
    sasl_respond,
    sasl_start,
)
from .diagnostics import secret_kind
from .smtp_checks import explain_sasl_outcome

AUTHORIZATION_COMMANDS = frozenset({"USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT"})
TRANSACTION_COMMANDS = frozenset({"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT"})
VERB_ORDER = ("USER", "PASS", "STAT", "LIST", "RETR", "DELE", "TOP", "UIDL", "QUIT", "RSET", "NOOP", "CAPA", "APOP", "AUTH", "STLS")
#: RFC 1939 3: arguments may be up to 40 characters long.
MAX_ARGUMENT = 40


class POP3Check(LineCheck):
    protocol = "pop3"

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
        if "\0" in text or len(text.encode("utf-8", "surrogateescape")) + 2 > self.policies.max_pop3_line:
            return None
        verb, _, argument = text.strip().partition(" ")
        verb = verb.upper()
        if verb not in POP3_COMMANDS or verb in self.profile.quirks.pop3_unimplemented:
            return None
        return verb, argument.strip()

    def server_user(self) -> str | None:
        """The USER name the server keeps: only an existing mailbox (mockservers.pop3.do_USER)."""
        user = self.session.user
        if user is None or self.profile.find_account(user) is None:
            return None
        return user

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
        limit = self.policies.max_pop3_line
        if octets + 2 > limit:
            self.add("line-too-long", "error", "line_too_long", length=octets + 2, limit=limit)
            return
        if "\0" in line:
            self.add("nul-character", "error", "bad_characters")
            return
        text = line.strip()
        if line != line.lstrip() and text:
            self.add("leading-space", "warning", suggestion=text)
        verb_token, _, argument = text.partition(" ")
        verb = verb_token.upper()
        if verb not in POP3_COMMANDS or verb in self.profile.quirks.pop3_unimplemented:
            self.unknown(verb_token, argument)
            return
        argument = argument.strip()
        action = self.fault(verb, argument)
        if action is not None and self.apply_fault(action, verb):
            return
        logged_in = bool(self.session.logged_in)
        allowed = TRANSACTION_COMMANDS if logged_in else AUTHORIZATION_COMMANDS
        if verb not in allowed:
            if logged_in:
                self.add("pop3-already-logged-in", "error", "wrong_state", verb=verb)
            else:
                self.add("pop3-needs-login", "error", "wrong_state", suggestion="USER " + self.example_user(), verb=verb)
            return
        for word in argument.split() if verb != "PASS" else [argument]:
            if len(word) > MAX_ARGUMENT:
                self.add("pop3-argument-too-long", "warning", limit=MAX_ARGUMENT)
                break
        getattr(self, f"check_{verb}")(argument)

    def example_user(self) -> str:
        return self.profile.accounts[0].address if self.profile.accounts else "user@example.com"

    def unknown(self, verb_token: str, argument: str) -> None:
        verb = verb_token.upper()
        if not verb_token:
            self.add("empty-line", "error", "unknown_command")
            return
        if verb in self.profile.quirks.pop3_unimplemented:
            self.add("command-not-offered", "error", "unknown_command", verb=verb)
            return
        letters = re.match(r"[A-Za-z]*", verb_token).group(0).upper()  # type: ignore[union-attr]
        if letters in SMTP_COMMANDS - POP3_COMMANDS:
            self.add("smtp-command-in-pop3", "error", "unknown_command", verb=letters)
            return
        near = nearest_verb(letters or verb, [v for v in VERB_ORDER if v not in self.profile.quirks.pop3_unimplemented])
        if near is not None:
            self.add("unknown-verb", "error", "unknown_command", suggestion=f"{near} {argument}".strip(), verb=verb_token, nearest=near)
        else:
            self.add("unknown-verb-no-guess", "error", "unknown_command", verb=verb_token)

    def tls_gate(self) -> bool:
        if self.policies.require_tls_for_auth and not self.tls:
            stls = self.profile.pop3_has("STLS", False)
            self.add("pop3-needs-tls", "error", "tls_required", suggestion="STLS" if stls else None)
            return False
        return True

    # --- AUTHORIZATION -----------------------------------------------------------------------------

    def check_USER(self, argument: str) -> None:  # noqa: N802
        if not argument:
            self.add("user-missing-name", "error", "user_syntax", suggestion="USER " + self.example_user())
            return
        if not self.tls_gate():
            return
        if self.profile.find_account(argument) is None:
            reply = self.render("user_unknown", {"user": argument})
            if reply and reply[0].startswith("-ERR"):
                self.add("user-unknown", "error", reply=reply, user=argument)
            else:
                self.add("user-unknown-hidden", "warning", user=argument)
            return
        if not self.tls:
            self.add("pop3-cleartext", "info")

    def check_PASS(self, argument: str) -> None:  # noqa: N802
        user = self.server_user()
        if user is None:
            if self.session.user is not None:
                self.add("pass-unknown-user", "error", "pass_without_user", user=self.session.user)
            else:
                self.add("pass-without-user", "error", "pass_without_user", suggestion="USER " + self.example_user())
            return
        if not argument:
            self.add("pass-missing", "error", "pass_syntax")
            return
        self.login_verdict(user, lambda secret: secret == argument, "pass_failed")

    def login_verdict(self, user: str, check: Any, fail_key: str) -> None:
        verdict = check_login(self.profile, user, check)
        if verdict.ok:
            if self.policies.login_delay:
                self.add("pop3-login-delay", "info", seconds=f"{self.policies.login_delay:g}")
            return
        values = {"user": user}
        if verdict.diagnostic == "auth-web-password" and verdict.account is not None:
            self.add("auth-web-password", "error", fail_key, reply_values=values, user=user, kind=secret_kind(verdict.account.secret_kind, self.lang))
        else:
            self.add(verdict.diagnostic, "error", fail_key, reply_values=values, user=user)

    def check_APOP(self, argument: str) -> None:  # noqa: N802
        if "{timestamp}" not in self.profile.pop3_greeting:
            self.add("apop-unavailable", "error", "apop_unavailable", suggestion="USER " + self.example_user())
            return
        parts = argument.split()
        timestamp = self.session.apop_timestamp
        if len(parts) != 2:
            self.add("apop-syntax", "error", "apop_syntax", suggestion=f"APOP {self.example_user()} <32 hex digits>")
            return
        name, digest = parts
        if len(digest) != 32:
            suggestion = f"APOP {name} {apop_digest(timestamp, digest)}" if timestamp else None
            self.add("apop-digest-length", "error", "apop_syntax", suggestion=suggestion, length=len(digest))
            return
        if any(c not in "0123456789abcdefABCDEF" for c in digest):
            self.add("apop-digest-not-hex", "error", "apop_syntax")
            return
        if not self.tls_gate():
            return
        if digest != digest.lower():
            self.add("apop-digest-uppercase", "warning", suggestion=f"APOP {name} {digest.lower()}")
        if timestamp is None:
            self.add("apop-no-timestamp-seen", "info")
            return
        self.login_verdict(name, lambda secret: apop_digest(timestamp, secret) == digest.lower(), "apop_failed")

    def check_AUTH(self, argument: str) -> None:  # noqa: N802
        mechanisms = self.profile.pop3_sasl_mechanisms(self.tls)
        if not argument:
            self.add("pop3-auth-list", "info", offered=mechanisms or "-")
            return
        if not self.tls_gate():
            return
        parts = argument.split()
        mechanism = parts[0].upper()
        if mechanism not in mechanisms or len(parts) > 2:
            usable = [m for m in mechanisms if m in IMPLEMENTED_MECHANISMS]
            self.add(
                "pop3-auth-mechanism", "error", "auth_unknown_mechanism",
                suggestion=f"AUTH {usable[0]}" if usable else "USER " + self.example_user(),
                reply_values={"mechanism": parts[0]}, mechanism=parts[0], offered=mechanisms or "-",
            )
            return
        if mechanism not in IMPLEMENTED_MECHANISMS:
            self.add("auth-mechanism-unsupported", "error", "auth_unknown_mechanism",
                     reply_values={"mechanism": mechanism}, mechanism=mechanism)
            return
        initial = parts[1] if len(parts) > 1 else None
        outcome = sasl_start(mechanism, initial, None)
        if outcome.kind != "challenge" or initial is not None:
            self.sasl_outcome(outcome, mechanism, initial or "")

    def auth_line(self) -> None:
        exchange = self.session.auth
        line = self.line
        octets = len(line.encode("utf-8", "surrogateescape"))
        if octets + 2 > self.policies.max_auth_line:
            self.add("line-too-long", "error", "line_too_long", length=octets + 2, limit=self.policies.max_auth_line)
            return
        if exchange.mechanism not in IMPLEMENTED_MECHANISMS:
            return
        outcome = sasl_respond(exchange.mechanism, line, username=exchange.username or None, challenge=exchange.challenge)
        self.sasl_outcome(outcome, exchange.mechanism, line)

    def sasl_outcome(self, outcome: Any, mechanism: str, line: str) -> None:
        explain_sasl_outcome(self, outcome, mechanism, line, fail_key="auth_failed")
        if outcome.kind == "credentials" and not self.decided and self.policies.login_delay:
            self.add("pop3-login-delay", "info", seconds=f"{self.policies.login_delay:g}")

    def check_STLS(self, argument: str) -> None:  # noqa: N802
        if self.tls:
            self.add("stls-already", "error", "stls_active")
            return
        if argument:
            self.add("no-argument-expected", "error", "no_arguments", suggestion="STLS", reply_values={"verb": "STLS"}, verb="STLS")
            return
        if not self.profile.pop3_has("STLS", False):
            self.add("stls-not-offered", "error", "stls_unavailable")
            return
        self.add("starttls-telnet", "info")

    def check_CAPA(self, argument: str) -> None:  # noqa: N802
        pass

    # --- TRANSACTION -------------------------------------------------------------------------------

    def message_count(self) -> int | None:
        """Messages in the maildrop at login (deleted ones included), when the client can know."""
        if self.session.message_count is not None:
            return int(self.session.message_count)
        return count_from_login(self.session, self.profile)

    def message_number(self, argument: str) -> None:
        count = self.message_count()
        shown = count if count is not None else "?"
        if not argument.isdigit() or len(argument) > 10:
            self.add("message-number-invalid", "error", "bad_number",
                     reply_values={"argument": argument, "count": shown}, argument=argument or "-")
            return
        number = int(argument)
        if number < 1:
            self.add("message-number-zero", "error", "no_such_message", reply_values={"number": number, "count": shown})
        elif count is not None and number > count:
            self.add("message-number-too-high", "error", "no_such_message",
                     reply_values={"number": number, "count": count}, number=number, count=count)
        elif number in self.session.deleted:
            self.add("message-deleted", "error", "message_deleted", suggestion="RSET",
                     reply_values={"number": number}, number=number)
        elif count is None:
            self.add("message-count-unknown", "info", suggestion="STAT")

    def check_STAT(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.add("no-argument-expected", "error", "no_arguments", suggestion="STAT", reply_values={"verb": "STAT"}, verb="STAT")

    def check_LIST(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.message_number(argument)

    def check_UIDL(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.message_number(argument)

    def check_RETR(self, argument: str) -> None:  # noqa: N802
        self.message_number(argument)

    def check_DELE(self, argument: str) -> None:  # noqa: N802
        self.message_number(argument)
        if not self.decided:
            self.add("dele-marks-only", "info")

    def check_TOP(self, argument: str) -> None:  # noqa: N802
        parts = argument.split()
        if len(parts) != 2 or not parts[1].isdigit():
            first = parts[0] if parts and parts[0].isdigit() else "1"
            self.add("top-syntax", "error", "top_syntax", suggestion=f"TOP {first} 10")
            return
        self.message_number(parts[0])

    def check_NOOP(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.add("no-argument-ignored", "warning", suggestion="NOOP", verb="NOOP")

    def check_RSET(self, argument: str) -> None:  # noqa: N802
        if argument:
            self.add("no-argument-ignored", "warning", suggestion="RSET", verb="RSET")

    def check_QUIT(self, argument: str) -> None:  # noqa: N802
        if not self.session.logged_in:
            return
        doomed = set(self.session.deleted)
        if self.policies.expire_days == 0:
            doomed |= set(self.session.retrieved)
        if doomed:
            self.add("quit-applies-deletions", "info", count=len(doomed))


def count_from_login(session: Any, profile: Profile) -> int | None:
    """Read the message count out of the login reply, using the persona's own template."""
    for exchange in reversed(session.history):
        reply = exchange.reply
        if getattr(reply, "kind", None) != "ok" or not reply.raw:
            continue
        verb = (exchange.after or "").split(" ")[0].upper()
        if exchange.kind == "auth-response" or verb in ("PASS", "APOP", "AUTH"):
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
    for literal, name, _, _ in _formatter_parse(template):
        pattern += re.escape(literal)
        if name == "count":
            pattern += r"(?P<count>\d+)"
        elif name is not None:
            pattern += r".*?"
    match = re.fullmatch(pattern, line)
    return int(match.group("count")) if match else None


def _formatter_parse(template: str) -> Any:
    import string

    return string.Formatter().parse(template)


def assume_success(session: Any) -> Any:
    """A copy of a POP3 session whose pending commands all got +OK (to plan the next line)."""
    twin = copy.deepcopy(session)
    while twin._pending:
        item = twin._pending[0]
        twin.received(["+OK", "."] if item.multiline else ["+OK"])
    return twin
