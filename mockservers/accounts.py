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


def parse_account_lines(text: str, source: str) -> list[Account]:
    """`ADDRESS:SECRET` one per line (a file or an environment variable, which `ps` does not show).

    Blank lines and lines starting with `#` are skipped; a bad line is `source:line: what is wrong`.
    """
    accounts = []
    for number, line in enumerate(text.splitlines(), start=1):
        spec = line.strip()
        if not spec or spec.startswith("#"):
            continue
        try:
            accounts.append(parse_account(spec))
        except ValueError as error:
            raise ValueError(f"{source}:{number}: {str(error).replace(repr(spec), 'ADDRESS:***')}") from None
    return accounts
