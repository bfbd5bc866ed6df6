"""Accounts: a mailbox, the secret that logs into it, and `ADDRESS:SECRET` from the command line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    """A mailbox and the secret that logs into it.

    `password` is the web password of personas that refuse it at SMTP/POP3 (QQ wants the
    authorization code in `secret`); a login with it fails with the persona's own text.
    """

    address: str
    secret: str
    secret_kind: str = "password"
    password: str | None = None
    note: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


def parse_account(spec: str) -> Account:
    """`ADDRESS:SECRET` from the command line."""
    address, sep, secret = spec.partition(":")
    address = address.strip().lower()
    if not sep or not secret:
        raise ValueError(f"account {spec!r} must be ADDRESS:SECRET")
    if address.count("@") != 1 or address.startswith("@") or address.endswith("@") or "/" in address:
        raise ValueError(f"account {spec!r}: {address!r} is not a mail address")
    return Account(address=address, secret=secret)
