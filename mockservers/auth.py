"""Credential checking through twisted.cred, and the SASL exchanges SMTP and POP3 share.

A `SASLExchange` turns the client's base64 lines into twisted.cred credentials, or into the reply
key that explains what was wrong; each protocol renders the keys with its own profile texts
(`334 ...` for SMTP, `+ ...` for POP3).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from zope.interface import Interface, implementer

from . import sasl
from .accounts import Account


class IMailAccount(Interface):
    """Avatar interface: the authenticated mailbox address."""


@implementer(credentials.IUsernameHashedPassword)
class APOPCredentials:
    """RFC 1939 APOP: MD5 of the greeting timestamp and the secret, checked without the secret."""

    def __init__(self, timestamp: str, username: str, digest: str) -> None:
        self.timestamp = timestamp
        self.username = username
        self.digest = digest.lower()

    def checkPassword(self, password: str) -> bool:  # noqa: N802 (twisted.cred interface)
        return sasl.apop_digest(self.timestamp, password) == self.digest


@implementer(credentials.IUsernameHashedPassword)
class CramCredentials:
    """RFC 2195 CRAM-MD5: HMAC-MD5 of our challenge keyed with the secret."""

    def __init__(self, challenge: bytes, username: str, digest: str) -> None:
        self.challenge = challenge
        self.username = username
        self.digest = digest

    def checkPassword(self, password: str) -> bool:  # noqa: N802
        return sasl.cram_md5_digest(password, self.challenge) == self.digest


@implementer(ICredentialsChecker)
class AccountChecker:
    """Checks a login (full address or unambiguous local part) against the persona's accounts.

    Remembers, per login, whether the web password was used where an authorization code was
    wanted, so the session can tell the learner why QQ said no.
    """

    credentialInterfaces = (credentials.IUsernamePassword, credentials.IUsernameHashedPassword)

    def __init__(self, find_account: Callable[[str], Account | None], accept_any_secret: bool = False) -> None:
        self.find_account = find_account
        self.accept_any_secret = accept_any_secret

    def requestAvatarId(self, creds: object) -> defer.Deferred:  # noqa: N802
        username = getattr(creds, "username", b"")
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        account = self.find_account(username)
        if self.accept_any_secret:  # the MailHog bug, for spot-the-bug personas
            return defer.succeed(account.address if account else username.strip().lower())
        if account is not None and creds.checkPassword(account.secret):  # type: ignore[attr-defined]
            return defer.succeed(account.address)
        reason = "unknown user" if account is None else "wrong secret"
        if account is not None and account.password and creds.checkPassword(account.password):  # type: ignore[attr-defined]
            reason = f"web password used instead of the {account.secret_kind}"
        return defer.fail(error.UnauthorizedLogin(reason))


@implementer(portal.IRealm)
class MailRealm:
    """The avatar is simply the mailbox address; the protocols do the rest."""

    def requestAvatar(self, avatarId: str, mind: object, *interfaces: object):  # noqa: N802, N803
        if IMailAccount in interfaces:
            return IMailAccount, avatarId, lambda: None
        raise NotImplementedError("no supported interface")


def make_portal(find_account: Callable[[str], Account | None], accept_any_secret: bool = False) -> portal.Portal:
    return portal.Portal(MailRealm(), [AccountChecker(find_account, accept_any_secret)])


def login(the_portal: portal.Portal, creds: object) -> defer.Deferred:
    """Deferred firing with the address, or failing with UnauthorizedLogin."""
    d = the_portal.login(creds, None, IMailAccount)
    return d.addCallback(lambda result: result[1])


def new_challenge(hostname: str) -> bytes:
    """A CRAM-MD5 / APOP style msg-id: `<pid.clock@host>`, unique per session."""
    return f"<{os.getpid()}.{time.time_ns()}.{os.urandom(3).hex()}@{hostname}>".encode("ascii")


# --- the exchange ------------------------------------------------------------------------


@dataclass
class Step:
    """What the protocol does next: send a challenge, check credentials, or refuse."""

    kind: str  # "challenge", "credentials", "error"
    reply: str = ""  # reply key for "challenge" and "error"
    values: dict[str, str] = field(default_factory=dict)
    creds: object | None = None
    username: str = ""


@dataclass
class SASLExchange:
    """One AUTH exchange in progress (PLAIN, LOGIN or CRAM-MD5)."""

    mechanism: str
    hostname: str
    username: str | None = None
    challenge: bytes = b""

    def start(self, initial: str | None) -> Step:
        """The first step, given the optional initial response on the AUTH line."""
        if self.mechanism == "PLAIN":
            return self.respond(initial) if initial is not None else Step("challenge", "auth_plain_prompt")
        if self.mechanism == "LOGIN":
            if initial is not None and initial.strip() not in ("", "="):
                return self.respond(initial)
            return Step("challenge", "auth_username_prompt")
        if self.mechanism == "CRAM-MD5":
            if initial is not None:
                return Step("error", "auth_malformed", {"reason": "CRAM-MD5 takes no initial response"})
            self.challenge = new_challenge(self.hostname)
            return Step("challenge", "auth_cram_challenge", {"challenge": sasl.b64encode_text(self.challenge)})
        return Step("error", "auth_unknown_mechanism", {"mechanism": self.mechanism})

    def respond(self, line: str) -> Step:
        """Feed one client line of the exchange."""
        if line.strip() == "*":
            return Step("error", "auth_aborted")
        try:
            decoded = sasl.b64decode_strict(line)
        except sasl.SASLError:
            return Step("error", "auth_bad_base64")
        try:
            return self._decoded(decoded)
        except sasl.SASLError as problem:
            return Step("error", "auth_malformed", {"reason": str(problem)})

    def _decoded(self, decoded: bytes) -> Step:
        if self.mechanism == "PLAIN":
            authzid, user, password = sasl.parse_plain(decoded)
            if authzid and authzid.lower() != user.lower():
                raise sasl.SASLError("authorization identity differs from the user")
            return Step("credentials", creds=credentials.UsernamePassword(user, password), username=user)
        if self.mechanism == "LOGIN":
            text = _utf8(decoded)
            if self.username is None:
                if not text:
                    raise sasl.SASLError("empty user name")
                self.username = text
                return Step("challenge", "auth_password_prompt")
            return Step("credentials", creds=credentials.UsernamePassword(self.username, text), username=self.username)
        user, digest = sasl.parse_cram_md5(decoded)
        return Step("credentials", creds=CramCredentials(self.challenge, user, digest), username=user)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise sasl.SASLError("decoded text is not UTF-8") from None
