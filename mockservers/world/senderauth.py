"""Sender authentication in the world: DKIM keys and signing, SPF/DKIM/DMARC checks at the MX.

The checks use the well-kept libraries: pyspf (RFC 7208) for SPF, dkimpy (RFC 6376) for DKIM,
authres (RFC 8601) to write the `Authentication-Results:` header. Both libraries ask the world's
DNS, not the machine's resolver: dkimpy through its `dnsfunc` argument, pyspf through its module's
`DNSLookup` hook, which here reads the nameserver of the calling thread (`_nameserver`) and falls
back to pyspf's own look-up for any other caller. DMARC (RFC 7489) is the small rule on top: a
pass when SPF or DKIM passes for a domain aligned with the From: domain (relaxed alignment,
section 3.1.1; the lab's organizational domain is the last two labels, without the Public Suffix
List), the policy from `_dmarc.<domain>`.

Everything here blocks on DNS: it runs in worker threads, never in the reactor thread.
"""

from __future__ import annotations

import base64
import email.utils
import threading
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email import policy as email_policy
from pathlib import Path
from typing import Any

import authres
import authres.dmarc
import dkim
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..arrival import Arrival, Verdict
from .dns import lookup, lookup_txt

#: Headers signed by the sending domain (RFC 6376 5.4.1 recommends From, Subject, Date, To...).
SIGNED_HEADERS = [b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type", b"Content-Transfer-Encoding"]

# --- pyspf asks the world's DNS in the threads that set a nameserver --------------------------

_nameserver = threading.local()
_pyspf_lookup = spf.DNSLookup


def _world_dns_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 30) -> list:
    """pyspf's DNSLookup contract: [((name, qtype), value)], values shaped as pyspf's own."""
    server = getattr(_nameserver, "address", None)
    if server is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    import dns.exception

    try:
        answers = lookup(server, name, qtype)
    except dns.exception.DNSException as problem:
        raise spf.TempError(f"DNS {problem}") from None
    found = []
    for rdata in answers:
        if qtype in ("A", "AAAA"):
            found.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            found.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            found.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            found.append(((name, qtype), rdata.strings))
    return found


spf.DNSLookup = _world_dns_lookup


# --- DKIM keys ----------------------------------------------------------------------------------


def ensure_dkim_key(directory: Path, domain: str) -> tuple[bytes, str]:
    """The domain's RSA key (2048 bits, RFC 8301 3.2) made once under `directory`; (PEM, p= value)."""
    path = Path(directory) / f"{domain}.pem"
    if path.exists():
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_bytes(
            private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
        )
        staging.chmod(0o600)
        staging.replace(path)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(public).decode("ascii")


def dkim_signer(domain: str, selector: str, private_pem: bytes) -> Any:
    """A function that prepends the domain's DKIM-Signature (relaxed/relaxed, rsa-sha256)."""

    def sign(message: bytes) -> bytes:
        present = {name.lower() for name, _ in _headers(message)}
        if "from" not in present:
            return message  # RFC 6376 5.4: From must be signed; without one there is nothing to sign
        include = [h for h in SIGNED_HEADERS if h.decode().lower() in present]
        signature = dkim.sign(
            message, selector.encode(), domain.encode(), private_pem,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=include,
        )
        return signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + message

    return sign


def _headers(message: bytes) -> list[tuple[str, str]]:
    parsed = BytesHeaderParser(policy=email_policy.compat32).parsebytes(message)
    return list(parsed.items())


# --- checks at the MX ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthResults:
    """What the receiving server found, for the header and for a DMARC decision."""

    spf: str
    spf_domain: str
    dkim: str
    dkim_domain: str
    dmarc: str
    from_domain: str
    dmarc_policy: str


def organizational_domain(domain: str) -> str:
    """The last two labels (the lab has no public suffixes deeper than one label)."""
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def aligned(domain: str, from_domain: str) -> bool:
    """RFC 7489 3.1.1 relaxed alignment."""
    return bool(domain) and organizational_domain(domain) == organizational_domain(from_domain)


class SenderChecks:
    """The MX's check (ServerContext.message_check): SPF, DKIM, DMARC, and the header."""

    def __init__(self, authserv_id: str, nameserver: tuple[str, int], enforce_dmarc: bool = False) -> None:
        self.authserv_id = authserv_id
        self.nameserver = nameserver
        self.enforce_dmarc = enforce_dmarc

    def evaluate(self, arrival: Arrival) -> AuthResults:
        _nameserver.address = self.nameserver
        try:
            mailfrom = arrival.sender or f"postmaster@{arrival.helo}"
            spf_result, _ = spf.check2(i=arrival.client_ip, s=arrival.sender, h=arrival.helo or "unknown")
            spf_domain = mailfrom.rpartition("@")[2].lower()
            dkim_result, dkim_domain = self._dkim(arrival.content)
            from_domain = self._from_domain(arrival.content)
            policy = ""
            dmarc_result = "none"
            if from_domain:
                records = [r.decode("utf-8", "replace") for r in lookup_txt(self.nameserver, f"_dmarc.{from_domain}") if r.startswith(b"v=DMARC1")]
                if len(records) == 1:
                    tags = dict(part.strip().partition("=")[::2] for part in records[0].split(";") if "=" in part)
                    policy = tags.get("p", "none").strip()
                    passed = (spf_result == "pass" and aligned(spf_domain, from_domain)) or (
                        dkim_result == "pass" and aligned(dkim_domain, from_domain)
                    )
                    dmarc_result = "pass" if passed else "fail"
        finally:
            _nameserver.address = None
        return AuthResults(spf_result, spf_domain, dkim_result, dkim_domain, dmarc_result, from_domain, policy)

    def _dkim(self, content: bytes) -> tuple[str, str]:
        """(result, d=) of the first DKIM-Signature; ("none", "") without one."""
        count = sum(1 for name, _ in _headers(content) if name.lower() == "dkim-signature")
        if not count:
            return "none", ""

        def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes:
            name = name.decode() if isinstance(name, bytes) else name
            records = lookup_txt(self.nameserver, name.rstrip("."))
            return records[0] if records else b""

        verifier = dkim.DKIM(content)
        try:
            ok = verifier.verify(idx=0, dnsfunc=dnsfunc)
        except dkim.DKIMException:
            ok = False
        domain = (verifier.domain or b"").decode("ascii", "replace").lower()
        return ("pass" if ok else "fail"), domain

    @staticmethod
    def _from_domain(content: bytes) -> str:
        from_header = next((value for name, value in _headers(content) if name.lower() == "from"), "")
        address = email.utils.parseaddr(str(from_header))[1]
        return address.rpartition("@")[2].lower() if "@" in address else ""

    def header(self, results: AuthResults, sender: str) -> bytes:
        """RFC 8601 `Authentication-Results:`, written by authres."""
        parts = [authres.SPFAuthenticationResult(result=results.spf, smtp_mailfrom=sender or f"postmaster@{results.spf_domain}")]
        if results.dkim != "none":
            parts.append(authres.DKIMAuthenticationResult(result=results.dkim, header_d=results.dkim_domain))
        else:
            parts.append(authres.DKIMAuthenticationResult(result="none"))
        if results.from_domain:
            parts.append(authres.dmarc.DMARCAuthenticationResult(result=results.dmarc, header_from=results.from_domain))
        header = authres.AuthenticationResultsHeader(authserv_id=self.authserv_id, results=parts)
        return (str(header).replace("\n", "\r\n") + "\r\n").encode("utf-8")

    def __call__(self, arrival: Arrival) -> Verdict:
        results = self.evaluate(arrival)
        if self.enforce_dmarc and results.dmarc == "fail" and results.dmarc_policy == "reject":
            return Verdict(
                reject=("dmarc_rejected", {"domain": results.from_domain}),
                reason=f"DMARC p=reject for {results.from_domain}: spf={results.spf}, dkim={results.dkim}",
            )
        return Verdict(headers=self.header(results, arrival.sender))
