"""Decisions a persona's policies make, in one place for the server and for the validator.

The SMTP session (`mockservers/smtp.py`) acts on these answers and the engine's checks (`simulator/engine`)
predict the same answers, so a learner is warned exactly when this persona will refuse. Each rule
names the real server's setting or the RFC it copies (docs/sources.md).
"""

from __future__ import annotations

from typing import Literal, Mapping, Protocol

from .addresses import is_domain

Stage = Literal["helo", "rcpt"]


class PolicyView(Protocol):
    """The persona policies these rules read (mockservers.profile.Policies has them all)."""

    helo_check: str
    delay_reject: bool
    undeclared_8bit: str


def is_fqdn_helo(name: str) -> bool:
    """Postfix's reject_non_fqdn_helo_hostname test: a dotted domain name or an address literal."""
    if name.startswith("[") and name.endswith("]"):
        return True
    return "." in name.strip(".") and is_domain(name.rstrip("."))


def helo_refused_at(policies: PolicyView, name: str | None, stage: Stage) -> bool:
    """Does this persona refuse the HELO/EHLO name `name` at `stage`?

    With `helo_check = "fqdn"` a name that is not fully qualified is refused. Postfix's default
    `smtpd_delay_reject = yes` postpones the HELO restrictions to RCPT TO (postconf(5)), so the
    greeting gets 250 and every RCPT TO gets the refusal; `delay_reject = false` refuses at
    HELO/EHLO itself.
    """
    if policies.helo_check != "fqdn" or name is None or is_fqdn_helo(name):
        return False
    return stage == ("rcpt" if policies.delay_reject else "helo")


def declared_8bit(params: Mapping[str, str | None]) -> bool:
    """MAIL FROM announced 8-bit content: BODY=8BITMIME (RFC 6152) or SMTPUTF8 (RFC 6531)."""
    upper = {key.upper(): (value or "").upper() for key, value in params.items()}
    return upper.get("BODY") in ("8BITMIME", "BINARYMIME") or "SMTPUTF8" in upper


def end_of_data_reply(policies: PolicyView, params: Mapping[str, str | None], has_8bit: bool) -> str:
    """The reply key for the end of a message, as far as undeclared 8-bit data decides it.

    RFC 6152 3: a client sends 8-bit data only after BODY=8BITMIME. What a server does with
    undeclared 8-bit data is its own choice: `accept` (Postfix, Gmail, Exchange, QQ: the message is
    taken as it is), `note` (accepted, and the reply says which rule was broken: the textbook
    persona) or `refuse`.
    """
    if not has_8bit or declared_8bit(params) or policies.undeclared_8bit == "accept":
        return "data_ok"
    return "data_ok_undeclared_8bit" if policies.undeclared_8bit == "note" else "undeclared_8bit"


def missing_brackets_key(verb: str) -> str:
    """The reply key for `MAIL FROM:a@b` / `RCPT TO:a@b` on a persona that requires `<...>`."""
    return "mail_missing_brackets" if verb.upper() == "MAIL" else "rcpt_missing_brackets"
