"""What the SMTP and POP3 line checks share: the diagnostic collector, the server's own
AUTH decoding, the credential check, fault scripts and "did you mean ...?".

Every decision here is the server's decision made with the server's own pure functions
(`mailprotocol.codec`, `mailprotocol.faults`, the persona's `Profile`), so the validator predicts the
mock servers instead of guessing; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import email.utils
import re
import time
from types import ModuleType
from typing import Any, Iterable

from mailprotocol import pop3, smtp
from mailprotocol.decision import Decision
from mailprotocol.faults import DATA_END, FaultAction, FaultScript, FaultTracker
from mockservers.profile import Profile

from .diagnostics import Diagnostic, Severity, make
from .knowledge import Lang, message

#: Where the validator assumes the learner connects from (fault rules may name a client).
DEFAULT_CLIENT_IP = "127.0.0.1"


def common_values(client_ip: str = DEFAULT_CLIENT_IP) -> dict[str, Any]:
    """Placeholders any reply may use that only the live session knows ({session}, {date} ...)."""
    now = int(time.time())
    return {"client_ip": client_ip, "session": "0a1b2c3d", "date": email.utils.formatdate(now, localtime=True), "epoch": now}


def is_refusal(code: str | None) -> bool:
    """True for a code that means "no": SMTP 4xx/5xx, POP3 -ERR."""
    return bool(code) and (code[0] in "45" or code == "-ERR")  # type: ignore[index]


class LineCheck:
    """Collects the diagnostics of one line; subclasses know one protocol."""

    protocol = "?"
    other_protocol = "?"
    #: The protocol core (`mailprotocol.smtp` or `.pop3`): parse, limits, decisions.
    core: ModuleType
    #: The core's state of the server as the client can know it, and its decision for this line.
    state: Any
    decision: Any = None

    def __init__(self, line: str, session: Any, profile: Profile, lang: Lang, client_ip: str) -> None:
        self.line = line
        self.session = session
        self.profile = profile
        self.lang = lang
        self.client_ip = client_ip
        self.found: list[Diagnostic] = []

    @property
    def policies(self) -> Any:
        return self.profile.policies

    @property
    def tls(self) -> bool:
        """TLS is on now: what the persona offers and allows depends on it."""
        return bool(self.session.tls_active)

    # --- rendering replies (subclasses) --------------------------------------------------------

    def render(self, key: str, values: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def prediction(self) -> Any:
        raise NotImplementedError

    def code_of(self, reply: list[str] | tuple[str, ...]) -> str:
        raise NotImplementedError

    # --- collecting ----------------------------------------------------------------------------

    def add(
        self,
        diagnostic_id: str,
        severity: Severity,
        key: str | None = None,
        *,
        suggestion: str | None = None,
        reply: list[str] | tuple[str, ...] | None = None,
        reply_values: dict[str, Any] | None = None,
        **values: Any,
    ) -> Diagnostic:
        """Record a diagnostic; `key` names the profile reply the server will send for it."""
        lines: tuple[str, ...] = ()
        if reply is not None:
            lines = tuple(reply)
        elif key is not None:
            lines = tuple(self.render(key, reply_values or {}))
        elif severity == "error":
            prediction = self.prediction()  # the core's reply to the line: the mistake's reply
            lines = tuple(prediction.shown()) if prediction is not None else ()
        code = self.code_of(lines) if lines else None
        if severity == "error" and lines and not is_refusal(code):
            severity = "warning"  # this persona answers the mistake with a success reply
        # `{verdict}` in a message: what the persona the learner talks to does with the line.
        refused = severity == "error" and code is not None
        values.setdefault("verdict", message("verdicts.refuses" if refused else "verdicts.accepts", self.lang, code=code or ""))
        diagnostic = make(diagnostic_id, severity, self.lang, suggestion=suggestion, code=code, reply=lines, **values)
        self.found.append(diagnostic)
        return diagnostic

    @property
    def decided(self) -> bool:
        """True once a diagnostic carries the server's refusal (later checks only add advice)."""
        return any(is_refusal(d.code) for d in self.found)

    # --- entry point ---------------------------------------------------------------------------

    def run(self) -> None:
        """The steps a line meets, in the server's order: a session that cannot take it, raw data
        (`raw_data`), a line of an AUTH exchange, a command."""
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
        if self.raw_data():
            return
        if session.auth is not None and session.auth.awaiting_client:
            self.auth_line()
            return
        self.command()

    def raw_data(self) -> bool:
        """Check a line the server reads as data, not as a command; True when it was one."""
        return False

    def auth_line(self) -> None:
        raise NotImplementedError

    def command(self) -> None:
        raise NotImplementedError

    def guess_verb(self, verb_token: str, argument: str, offered: Iterable[str]) -> None:
        """A verb the server does not know: the other protocol's, or the nearest one it offers."""
        letters = re.match(r"[A-Za-z]*", verb_token).group(0).upper()  # type: ignore[union-attr]
        other = pop3 if self.core is smtp else smtp
        if letters in other.VERB_NAMES - self.core.VERB_NAMES:
            self.add(f"{self.other_protocol}-command-in-{self.protocol}", "error", verb=letters)
            return
        near = nearest_verb(letters or verb_token.upper(), offered)
        if near is not None:
            self.add("unknown-verb", "error", suggestion=f"{near} {argument}".strip(), verb=verb_token, nearest=near)
        else:
            self.add("unknown-verb-no-guess", "error", verb=verb_token)

    # --- the line as the server frames it -------------------------------------------------------

    def too_long(self) -> bool:
        """Report a line the server never reads: over the limit of the servers' framing (the core's
        `line_limit_for`) or of the core's parse (an SMTP MAIL's parameters); True when it is."""
        encoded = self.line.encode("utf-8", "surrogateescape")
        length = len(encoded) + 2
        decision = self.decision
        if decision is None or decision.reason != "line-too-long" or decision.detail is None:
            limit = self.core.line_limit_for(self.state, self.profile, encoded)
            if length <= limit:
                return False
            self.decision = self.core.line_too_long(self.state, limit)
        self.add("line-too-long", "error", length=length, limit=self.decision.detail)
        return True

    def blank_state(self) -> Any:
        """The state a history line is parsed in: a new session (TLS as now, for SMTP's verbs)."""
        raise NotImplementedError

    def server_verb(self, text: str) -> tuple[str, str] | None:
        """(VERB, argument) as the server dispatches a history line; None when it is not dispatched."""
        blank = self.blank_state()
        encoded = text.encode("utf-8", "surrogateescape")
        if len(encoded) + 2 > self.core.line_limit_for(blank, self.profile, encoded):
            return None
        parsed = self.core.parse(blank, self.profile, text)
        return None if isinstance(parsed, Decision) else (parsed.verb, parsed.argument)

    # --- faults --------------------------------------------------------------------------------

    def fault(self, command: str, argument: str = "") -> FaultAction | None:
        """The instructor's fault rule that fires for this command (or DATA-END), replaying the session so far."""
        if not self.profile.faults:
            return None
        tracker = replay_faults(self)
        if command == DATA_END:
            return tracker.end_of_data(client=self.client_ip)
        return tracker.command(command, argument, client=self.client_ip)

    def account_now(self) -> str | None:
        raise NotImplementedError

    def apply_fault(self, action: FaultAction, command: str) -> bool:
        """Report a scripted fault; True when it replaces the server's normal answer."""
        if action.reply:
            reply = self.render_fault(action.reply)
            code = self.code_of(reply)
            self.add("scripted-fault", "error" if is_refusal(code) else "info", reply=reply, command=command)
            return True
        if action.drop:
            self.add("scripted-drop", "error", command=command)
            return True
        self.add("scripted-delay", "info", command=command, seconds=f"{action.delay:g}")
        return False

    def render_fault(self, lines: tuple[str, ...]) -> list[str]:
        return list(lines)


def replay_faults(check: LineCheck) -> FaultTracker:
    """The server's fault tracker as the session so far left it: the history told to it as the server tells it."""
    profile = check.profile
    tracker = FaultTracker(FaultScript(tuple(profile.faults), profile.seed), check.protocol)
    ip = check.client_ip
    for exchange in check.session.history:
        code = _code_of_reply(exchange.reply)
        accepted = code[:1] == "2" if check.protocol == "smtp" else code == "+OK"
        if exchange.kind == "greeting":
            tracker.connect(client=ip)
        elif exchange.kind == "end-of-data":
            tracker.end_of_data(client=ip)
        elif exchange.kind == "auth-response":
            tracker.answered("AUTH", accepted, account=check.account_now())
        elif exchange.kind in ("command", "bdat") and exchange.sent is not None:
            parsed = check.server_verb(exchange.sent)
            if parsed is None:
                continue
            verb, argument = parsed
            tracker.command(verb, argument, client=ip)
            recipient = smtp.recipient_of(profile, argument) if verb == "RCPT" and accepted else None
            tracker.answered(verb, accepted, account=check.account_now(), recipient=recipient)
    return tracker


def _code_of_reply(reply: Any) -> str:
    code = getattr(reply, "code", None)
    if isinstance(code, str):
        return code
    indicator = getattr(reply, "indicator", None)
    return indicator or ""


# --- AUTH lines -----------------------------------------------------------------------------------


def describe_decoded(decoded: bytes | None) -> str:
    """Decoded AUTH bytes for a sentence: printable, NUL shown as \\0."""
    if decoded is None:
        return ""
    text = decoded.decode("utf-8", "replace")
    out = []
    for char in text:
        if char == "\0":
            out.append("\\0")
        elif ord(char) < 32 or ord(char) == 127:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def has_control_characters(decoded: bytes) -> bool:
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any((ord(c) < 32 and c not in "\0") or ord(c) == 127 or c == "\ufffd" for c in text)


# --- "did you mean ...?" --------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


def nearest_verb(typed: str, candidates: Iterable[str]) -> str | None:
    """The known verb closest to a mistyped one (EHOL -> EHLO), or None when nothing is close."""
    word = typed.upper()
    if not word:
        return None
    best: tuple[int, int, str] | None = None
    for rank, verb in enumerate(candidates):
        distance = edit_distance(word, verb)
        if sorted(word) == sorted(verb):
            distance = min(distance, 1)  # the right letters in the wrong order
        limit = 1 if len(verb) <= 3 or len(word) <= 3 else 2
        if distance <= limit and (best is None or (distance, rank) < best[:2]):
            best = (distance, rank, verb)
    return best[2] if best else None


_B64_ALPHABET = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def looks_like_base64_text(text: str) -> bool:
    """The decoded text is itself base64 (the learner encoded twice)."""
    stripped = text.strip()
    return len(stripped) >= 8 and len(stripped) % 4 == 0 and bool(_B64_ALPHABET.match(stripped))
