"""Validate a line before the learner sends it: will this server accept it, and if not, why?

    validate_line(line, protocol="smtp", session=s, profile="qq", lang="zh") -> [Diagnostic, ...]
    predict(line, session, profile) -> "503" / "-ERR" / None (None: the server should accept it)

The input is the line, the client-side session model (`simulator.engine.session`: where the
conversation is) and the persona (`mockservers.profile.Profile`: how strict this server is). The
checks replay the mock server's own decisions with the server's own pure code (addresses,
parameters, SASL decoding, fault scripts), so a prediction is what the server will answer; a
`tests/test_engine_corpus.py` corpus holds the validator to that against the real servers.

Severities: "error" the server will refuse the line (the diagnostic carries the reply), "warning"
non-standard but this server accepts it, "info" worth knowing (what happens next).

`build_session()` replays lines already sent with the replies this persona would give, for
`maillab validate --after ...`; "what may I send now?" is `session.next_commands()`.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

from mockservers.profile import Profile, load_profile

from .checks import DEFAULT_CLIENT_IP, common_values, is_refusal
from .diagnostics import Diagnostic, label
from .knowledge import Lang, message, resolve_language
from .pop3_checks import POP3Check, assume_success
from .prediction import Prediction
from .session import POP3Session, SMTPSession
from .smtp_checks import SMTPCheck

Protocol = Literal["smtp", "pop3"]
Session = SMTPSession | POP3Session

__all__ = ["Diagnostic", "build_session", "describe_state", "expected_reply", "fresh_session", "has_errors", "predict",
           "predicted_reply", "validate_line"]

def resolve_profile(profile: Profile | str | None) -> Profile:
    if isinstance(profile, Profile):
        return profile
    return load_profile(profile or "rfc")


def fresh_session(protocol: Protocol, profile: Profile | str | None = None) -> Session:
    """A session that has just received this persona's greeting."""
    chosen = resolve_profile(profile)
    if protocol == "pop3":
        session: Session = POP3Session()
        stamp = f"<1896.697170952@{chosen.pop3_hostname}>"
        session.received(chosen.pop3("greeting", **common_values(), timestamp=stamp))
        return session
    session = SMTPSession()
    session.received(chosen.smtp("greeting", **common_values()))
    return session


def _protocol_of(session: Session | None, protocol: str | None) -> Protocol:
    if isinstance(session, POP3Session):
        return "pop3"
    if isinstance(session, SMTPSession):
        return "smtp"
    return "pop3" if (protocol or "").lower() == "pop3" else "smtp"


def validate_line(
    line: str,
    *,
    protocol: str | None = None,
    session: Session | None = None,
    profile: Profile | str | None = None,
    lang: str | None = None,
    client_ip: str = DEFAULT_CLIENT_IP,
) -> list[Diagnostic]:
    """Diagnostics for `line` (without its CRLF), in the order the server would meet them.

    `session` is not changed. Without a session the line is checked right after the greeting.
    """
    chosen = resolve_profile(profile)
    if session is None:
        session = fresh_session(_protocol_of(None, protocol), chosen)
    return _run_check(line, session, chosen, resolve_language(lang), client_ip).found


def _run_check(
    line: str, session: Session, profile: Profile | str | None, language: Lang = "en", client_ip: str = DEFAULT_CLIENT_IP
) -> SMTPCheck | POP3Check:
    """The line (without its CRLF) checked against the session as it will be when the line arrives."""
    line, profile = line.rstrip("\r\n"), resolve_profile(profile)
    current, waiting = _settled(session)
    check = (POP3Check if isinstance(session, POP3Session) else SMTPCheck)(line, current, profile, language, client_ip)
    if waiting:
        check.add("wait-for-reply", "warning", pending=len(session.pending))
    check.run()
    return check


def _settled(session: Session) -> tuple[Session, bool]:
    """The session as it will be when the line arrives: pending commands assumed successful.

    Returns (session to check against, whether the client should have waited for a reply).
    """
    if not session._pending:
        return session, False
    waiting = session.expecting.value == "reply"
    if isinstance(session, SMTPSession):
        if session.data_mode or session.bdat_remaining or (session.auth is not None and session.auth.awaiting_client):
            return session, False
        return session._assuming_success(), waiting
    return assume_success(session), waiting


def predict(
    line: str, session: Session | None = None, profile: Profile | str | None = None, *, protocol: str | None = None
) -> str | None:
    """The reply code the server will refuse `line` with ("503", "-ERR"), or None if it accepts.

    The protocol core's decision (a scripted fault's reply when one fires); the session waits for
    replies still due as if they were successes.
    """
    chosen = resolve_profile(profile)
    check = _run_check(line, session or fresh_session(_protocol_of(None, protocol), chosen), chosen)
    for diagnostic in check.found:
        if diagnostic.id.startswith("scripted-") or diagnostic.id in ("session-closed", "tls-handshake-pending"):
            return diagnostic.code if is_refusal(diagnostic.code) else None
    prediction = check.prediction()
    if prediction is None or not prediction.lines:
        return None
    code = check.code_of(prediction.lines)
    return code if is_refusal(code) else None


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


# --- the replies this persona would send (for --after and lessons) -------------------------------


def expected_reply(line: str, session: Session, profile: Profile | str | None = None) -> list[str]:
    """The reply lines this persona should send to `line`: the predicted refusal, or its success.

    [] when the line gets no reply of its own (a DATA text line, BDAT octets).
    """
    check = _run_check(line, session, profile)
    for diagnostic in check.found:
        if diagnostic.reply and (is_refusal(diagnostic.code) or diagnostic.id in ("scripted-fault", "auth-cancel")):
            return list(diagnostic.reply)
    prediction = check.prediction()
    return prediction.shown() if prediction else []


def predicted_reply(line: str, session: Session, profile: Profile | str | None = None) -> Prediction | None:
    """The protocol core's reply to `line`, values only the live server knows left open.

    None when the validator cannot know (a scripted fault, an APOP without the greeting's timestamp).
    """
    check = _run_check(line, session, profile)
    if any(d.id.startswith("scripted-") for d in check.found):
        return None
    return check.prediction()


def build_session(
    lines: Sequence[str], *, protocol: str = "smtp", profile: Profile | str | None = None
) -> Session:
    """Replay lines already sent, each answered as this persona would (refusals included).

    A STARTTLS/STLS that the server accepts is assumed to complete its TLS handshake.
    """
    chosen = resolve_profile(profile)
    kind = _protocol_of(None, protocol)
    session = fresh_session(kind, chosen)
    deferred: list[str] = []  # the reply to BDAT, which comes after its octets
    for line in lines:
        line = line.rstrip("\r\n")
        reply = expected_reply(line, session, chosen)
        known_count = getattr(session, "message_count", None)
        session.sent(line)
        if isinstance(session, SMTPSession) and session.bdat_remaining and "CHUNKING" in session.capabilities:
            deferred = deferred or reply
            continue
        if deferred:
            reply, deferred = deferred, []
        if reply:
            session.received(reply)
        if isinstance(session, POP3Session):
            # Simulated LIST/STAT replies carry no real numbers: keep what was known.
            session.message_count = known_count if session.message_count in (None, 0) else session.message_count
        if session.tls_pending:
            session.tls_started()
    return session


def describe_state(session: Session, lang: str | None = None) -> str:
    """One line for the CLI: where the session is and what may be sent now."""
    language: Lang = resolve_language(lang)
    allowed = session.next_commands()
    shown = ", ".join(allowed) if allowed else "-"
    colon = "：" if language == "zh" else ": "
    separator = "；" if language == "zh" else "; "
    return f"{label('state', language)}{colon}{state_name(session, language)}{separator}{label('next', language)}{colon}{shown}"


def state_name(session: Session, lang: str | None = None) -> str:
    """The session's state in the learner's language (messages.toml smtp_states / pop3_states)."""
    section = "pop3_states" if isinstance(session, POP3Session) else "smtp_states"
    return message(f"{section}.{session.state.value}", resolve_language(lang))
