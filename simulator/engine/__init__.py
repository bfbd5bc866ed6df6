"""The protocol engine: knowledge, reply parsing, explanations and session models.

Plain Python with no UI or Twisted imports, so the TUI, `maillab lint` and grading share it and
tests run without a terminal or a reactor.

Modules, one job each:
    knowledge  load the TOML knowledge files, look things up, pick the language
    helpers    base64 / SASL / APOP calculators (re-exports mailprotocol.codec)
    replies    parse SMTP replies and POP3 responses
    commands   parse SMTP and POP3 command lines
    auth       follow one SASL exchange from the client's side
    explain    explain a reply part by part (en/zh)
    session    follow a whole SMTP or POP3 session; "what may I send now?"
"""

from .explain import AFTER_CONNECT, AFTER_END_OF_DATA, Explanation, explain_reply
from .knowledge import Lang, resolve_language
from .replies import POP3Reply, SMTPReply, parse_pop3_reply, parse_smtp_reply
from .session import POP3Session, POP3State, SMTPSession, SMTPState

__all__ = [
    "AFTER_CONNECT",
    "AFTER_END_OF_DATA",
    "Explanation",
    "Lang",
    "POP3Reply",
    "POP3Session",
    "POP3State",
    "SMTPReply",
    "SMTPSession",
    "SMTPState",
    "explain_reply",
    "parse_pop3_reply",
    "parse_smtp_reply",
    "resolve_language",
]
