"""Who may log in with what: one verdict for the servers (twisted.cred checker) and the validator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from mockservers.accounts import Account
    from mockservers.profile import Profile


@dataclass(frozen=True)
class Verdict:
    """`reason` when refused: "unknown-user", "web-password" (QQ wants the authorization code), "wrong-secret"."""

    ok: bool
    reason: str = ""
    account: "Account | None" = None
    address: str = ""  # the mailbox the login opens

    def describe(self) -> str:
        """The server's log text for a refusal."""
        if self.reason == "web-password" and self.account is not None:
            return f"web password used instead of the {self.account.secret_kind}"
        return self.reason.replace("-", " ")


def check_login(persona: "Profile", user: str, check: Callable[[str], bool]) -> Verdict:
    """A login (full address or unambiguous local part) against the persona's accounts."""
    account = persona.find_account(user)
    if persona.quirks.accept_any_secret:  # the MailHog bug, for spot-the-bug personas
        return Verdict(True, account=account, address=login_address(persona, user) or "")
    if account is not None and check(account.secret):
        return Verdict(True, account=account, address=account.address)
    if account is None:
        return Verdict(False, "unknown-user")
    if account.password and check(account.password):
        return Verdict(False, "web-password", account)
    return Verdict(False, "wrong-secret", account)


def login_address(persona: "Profile", user: str | None) -> str | None:
    """The mailbox a successful login as `user` opens (None when no login as `user` can succeed)."""
    if not user:
        return None
    account = persona.find_account(user)
    if account is not None:
        return account.address
    return user.strip().lower() if persona.quirks.accept_any_secret else None
