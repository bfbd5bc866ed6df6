"""Follow one SASL exchange from the client's side (SMTP `334` and POP3 `+ ` alike).

A learner types base64 by hand, so the session must know, mid-exchange, what the server is
waiting for (user name, password, CRAM-MD5 answer) and what the learner's line decoded to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .helpers import (
    SASLError,
    b64decode_strict,
    decode_base64_text,
    parse_cram_md5,
    parse_plain,
    parse_xoauth2,
)

#: What the server asked for with its last challenge.
Prompt = Literal["username", "password", "initial", "challenge", "error-detail", "unknown"]


@dataclass
class AuthExchange:
    """The state of one AUTH command, from the command to 235/535 (or +OK/-ERR)."""

    mechanism: str
    username: str | None = None
    password: str | None = None  # LOGIN/PLAIN secret as decoded (mock accounts: shown to learners)
    authzid: str | None = None
    challenge: str | None = None  # the last challenge, decoded for display
    prompt: Prompt | None = None  # what the last challenge asked for
    awaiting_client: bool = False  # a challenge came and the client has not answered yet
    responses: int = 0  # client lines sent after challenges
    cancelled: bool = False
    problems: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, mechanism: str, initial_response: str | None = None) -> "AuthExchange":
        """The client sent `AUTH mechanism [initial-response]`."""
        exchange = cls(mechanism.upper())
        if initial_response is not None:
            exchange._take_response(initial_response, "username" if exchange.mechanism == "LOGIN" else "initial")
        return exchange

    # --- server side ---------------------------------------------------------------------

    def on_challenge(self, text: str) -> Prompt:
        """The server sent `334 text` / `+ text`: work out what it asks for."""
        decoded = decode_base64_text(text) if text.strip() else None
        self.challenge = decoded.text if decoded else text.strip()
        self.awaiting_client = True
        prompt: Prompt
        lowered = (self.challenge or "").strip().lower()
        if self.mechanism == "LOGIN":
            if lowered.startswith("username") or lowered.startswith("user name"):
                prompt = "username"
            elif lowered.startswith("password"):
                prompt = "password"
            else:
                prompt = "username" if self.username is None else "password"
        elif self.mechanism in ("PLAIN", "XOAUTH2", "OAUTHBEARER", "PLAIN-CLIENTTOKEN"):
            if not text.strip():
                prompt = "initial"
            elif self.responses or self.username:
                prompt = "error-detail"  # XOAUTH2 sends a base64 JSON error, client sends empty line
            else:
                prompt = "initial"
        elif self.mechanism == "CRAM-MD5":
            prompt = "challenge"
        else:
            prompt = "unknown"
        self.prompt = prompt
        return prompt

    # --- client side ---------------------------------------------------------------------

    def on_client_line(self, line: str) -> None:
        """The client answered the last challenge with one line (base64, or `*` to cancel)."""
        self.awaiting_client = False
        self.responses += 1
        if line.strip() == "*":
            self.cancelled = True
            return
        self._take_response(line, self.prompt or "unknown")

    def _take_response(self, line: str, prompt: Prompt) -> None:
        try:
            data = b64decode_strict(line)
        except SASLError:
            self.problems.append("auth_bad_base64")
            return
        try:
            if prompt == "error-detail":
                return
            if self.mechanism == "LOGIN":
                text = data.decode("utf-8")
                if prompt == "password":
                    self.password = text
                else:
                    self.username = text
            elif self.mechanism == "PLAIN":
                if not data and prompt == "initial" and line.strip() == "=":
                    return
                self.authzid, self.username, self.password = parse_plain(data)
            elif self.mechanism == "CRAM-MD5":
                self.username, _digest = parse_cram_md5(data)
            elif self.mechanism == "XOAUTH2":
                self.username, _token = parse_xoauth2(data)
        except (SASLError, UnicodeDecodeError):
            self.problems.append("auth_bad_payload")

    @property
    def secret_given(self) -> bool:
        return self.password is not None
