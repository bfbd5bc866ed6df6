"""Credential checking through twisted.cred, and the SASL exchanges SMTP and POP3 share.

A `SASLExchange` turns the client's base64 lines into twisted.cred credentials, or into the reply
key that explains what was wrong; each protocol renders the keys with its own profile texts
(`334 ...` for SMTP, `+ ...` for POP3).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from zope.interface import Interface, implementer

from mailprotocol import sasl as core_sasl
from mailprotocol.credentials import check_login

if TYPE_CHECKING:
    from .profile import Profile


class IMailAccount(Interface):
    """Avatar interface: the authenticated mailbox address."""


@implementer(ICredentialsChecker)
class AccountChecker:
    """Checks a login against the persona's accounts with the protocol core's verdict.

    The refusal's text says why (unknown user, wrong secret, the web password where QQ wants the
    authorization code), so the session can tell the learner why the server said no.
    """

    credentialInterfaces = (credentials.IUsernamePassword, credentials.IUsernameHashedPassword)

    def __init__(self, persona: "Profile") -> None:
        self.persona = persona

    def requestAvatarId(self, creds: object) -> defer.Deferred:  # noqa: N802
        username = getattr(creds, "username", b"")
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        verdict = check_login(self.persona, username, creds.checkPassword)  # type: ignore[attr-defined]
        if verdict.ok:
            return defer.succeed(verdict.address)
        return defer.fail(error.UnauthorizedLogin(verdict.describe()))


@implementer(portal.IRealm)
class MailRealm:
    """The avatar is simply the mailbox address; the protocols do the rest."""

    def requestAvatar(self, avatarId: str, mind: object, *interfaces: object):  # noqa: N802, N803
        if IMailAccount in interfaces:
            return IMailAccount, avatarId, lambda: None
        raise NotImplementedError("no supported interface")


def make_portal(persona: "Profile") -> portal.Portal:
    return portal.Portal(MailRealm(), [AccountChecker(persona)])


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


@implementer(credentials.IUsernameHashedPassword)
class CheckedCredentials:
    """Credentials from an AUTH exchange: the core's `check(secret)` says whether a secret fits."""

    def __init__(self, username: str, check: Callable[[str], bool]) -> None:
        self.username = username
        self.check = check

    def checkPassword(self, password: str) -> bool:  # noqa: N802
        return self.check(password)


@dataclass
class SASLExchange:
    """One AUTH exchange in progress, decided by `mailprotocol.sasl` (PLAIN, LOGIN or CRAM-MD5)."""

    mechanism: str
    hostname: str
    state: core_sasl.Exchange | None = None

    def start(self, initial: str | None) -> Step:
        """The first step, given the optional initial response on the AUTH line."""
        challenge = new_challenge(self.hostname) if self.mechanism == "CRAM-MD5" else b""
        return self._step(core_sasl.start(self.mechanism, initial, challenge))

    def respond(self, line: str) -> Step:
        """Feed one client line of the exchange."""
        assert self.state is not None
        return self._step(core_sasl.respond(self.state, line))

    @property
    def username(self) -> str | None:
        return self.state.username if self.state else None

    def _step(self, step: core_sasl.Step) -> Step:
        self.state = step.exchange or self.state
        if step.kind == "credentials":
            assert step.check is not None
            return Step("credentials", creds=CheckedCredentials(step.user, step.check), username=step.user)
        return Step(step.kind, step.key, dict(step.values))
