"""Profiles: a persona's identity, reply texts, capabilities, accounts and policies, as data.

Protocol code never holds a reply text: it names a reply key ("mail_ok", "need_helo") and the
profile renders it. Bundled personas are TOML files in `mockservers/personas/`; an instructor's
profile is the same format and may `extends = "qq"` (or a path) to override any part.

No Twisted imports: the simulator's engine reads profiles too. Reading files and `extends` live
in `profile_files`, checking in `lint`, rendering in `rendering`, accounts in `accounts`; this
module turns checked tables into a `Profile`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .accounts import Account
from .output import DEFAULT_MAX_BYTES, DEFAULT_MAX_LOG_LINES
from .lint import check_sources
from .profile_files import ProfileError, ProfileSources, load_sources, resolve_profile_path
from .rendering import format_template, render_pop3, render_smtp, strip_enhanced


@dataclass(frozen=True)
class Capability:
    """One advertised EHLO keyword or POP3 CAPA tag; `when` is "always", "plain" or "tls"."""

    text: str
    when: str = "always"

    def shown(self, tls_active: bool) -> bool:
        if self.keyword in ("STARTTLS", "STLS") and tls_active:
            return False
        return self.when == "always" or (self.when == "tls") == tls_active

    @property
    def keyword(self) -> str:
        return re.split(r"[ =]", self.text, maxsplit=1)[0].upper()


@dataclass(frozen=True)
class Policies:
    """How strict the persona is; every field is a switch or a number an instructor sets.

    docs/profiles.md documents each one with an example.
    """

    strict_syntax: bool = True
    require_helo: bool = True
    helo_check: str = "none"
    delay_reject: bool = False
    undeclared_8bit: str = "accept"
    require_auth_for_mail: bool = False
    sender_must_match_auth: bool = False
    require_tls_for_auth: bool = False
    require_tls_for_mail: bool = False
    mechanisms_requiring_tls: tuple[str, ...] = ()
    relay: str = "authenticated"
    max_message_size: int = 10240000
    max_recipients: int = 1000
    vrfy: str = "252"
    expn: str = "252"
    atrn: bool = False
    smtp_idle_timeout: float = 300.0
    pop3_idle_timeout: float = 600.0
    max_command_line: int = 512
    max_auth_line: int = 12288
    max_pop3_line: int = 255
    max_connections: int = 0
    max_connections_per_client: int = 0
    max_auth_failures: int = 0
    auth_failure_action: str = "disconnect"
    greylist_delay: float = 0.0
    tarpit_delay: float = 0.0
    login_delay: float = 0.0
    expire_days: int = -1
    implicit_tls_only: bool = False
    max_sessions: int = 0
    fd_headroom: int = 64
    max_session_time: float = 3600.0
    min_data_rate: float = 2.0
    rate_grace: float = 10.0
    auth_failure_delay: float = 0.25
    auth_failure_delay_max: float = 2.0
    auth_lockout_failures: int = 10
    auth_lockout_window: float = 300.0
    hide_unknown_users: bool = True
    mailbox_quota: int = 1 << 30
    quota_full_tempfail: bool = False
    min_free_disk: int = 64 << 20
    log_queue_lines: int = DEFAULT_MAX_LOG_LINES
    transcript_queue_bytes: int = DEFAULT_MAX_BYTES

@dataclass(frozen=True)
class Quirks:
    """Deliberate bugs of real servers, for spot-the-bug exercises."""

    smtp_unimplemented: tuple[str, ...] = ()
    pop3_unimplemented: tuple[str, ...] = ()
    enhanced_codes: str = "auto"  # "auto", "success-only" (codes vanish from failures), "never"
    disconnect_after_unknown: int = 0
    accept_any_secret: bool = False


@dataclass(frozen=True)
class PreloadedMail:
    """A message waiting in a mailbox when the server starts."""

    to: str
    content: bytes
    origin: str


@dataclass(frozen=True)
class Profile:
    """A fully resolved persona: what the servers say and how strict they are."""

    name: str
    description: str
    source: Path
    hostname: str
    pop3_hostname: str
    implementation: str
    smtp_replies: Mapping[str, tuple[str, ...]]
    pop3_replies: Mapping[str, tuple[str, ...]]
    pop3_greeting: str
    smtp_capabilities: tuple[Capability, ...]
    pop3_capabilities: tuple[Capability, ...]
    accounts: tuple[Account, ...]
    local_domains: tuple[str, ...]
    policies: Policies
    quirks: Quirks = Quirks()
    relay_domains: tuple[str, ...] = ()
    smtp_close_after: frozenset[str] = frozenset()
    pop3_close_after: frozenset[str] = frozenset()
    preloaded_mail: tuple[PreloadedMail, ...] = ()
    faults: tuple[Any, ...] = ()  # FaultRule
    seed: int = 0
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)
    _cache: dict[Any, Any] = field(init=False, repr=False, compare=False, default_factory=dict)

    # --- rendering -----------------------------------------------------------------------

    @property
    def enhanced_status_codes(self) -> bool:
        return any(c.keyword == "ENHANCEDSTATUSCODES" for c in self.smtp_capabilities)

    def values(self, **extra: Any) -> dict[str, Any]:
        """Placeholders every reply may use, plus the call's own."""
        base = {
            "host": self.hostname,
            "pop3_host": self.pop3_hostname,
            "implementation": self.implementation,
            "max_size": self.policies.max_message_size,
        }
        base.update(extra)
        return base

    def smtp(self, key: str, **values: Any) -> list[str]:
        """The wire lines of SMTP reply `key`."""
        return render_smtp(self.smtp_replies[key], self.values(**values))

    def smtp_code(self, key: str) -> int:
        return int(self.smtp_replies[key][0][:3])

    def pop3(self, key: str, **values: Any) -> list[str]:
        """The wire line(s) of POP3 reply `key`."""
        return render_pop3(self.pop3_replies[key], self.values(**values))

    # --- capabilities --------------------------------------------------------------------

    def ehlo_keywords(self, tls_active: bool) -> list[str]:
        return [c.keyword for c in self.smtp_capabilities if c.shown(tls_active)]

    def ehlo_reply(self, tls_active: bool, **values: Any) -> list[str]:
        """The EHLO reply: the persona's first line, then each advertised capability."""
        first = self.smtp_replies["ehlo"]
        caps = tuple(f"250 {c.text}" for c in self.smtp_capabilities if c.shown(tls_active))
        return render_smtp(first + caps, self.values(**values))

    def smtp_extensions(self, tls_active: bool) -> frozenset[str]:
        """Keywords whose behaviour is on: an extension works only where it is advertised."""
        cached = self._cache.get(("extensions", tls_active))
        if cached is None:
            cached = self._cache[("extensions", tls_active)] = frozenset(self.ehlo_keywords(tls_active))
        return cached

    def smtp_auth_mechanisms(self, tls_active: bool) -> list[str]:
        return _mechanisms(c.text for c in self.smtp_capabilities if c.keyword == "AUTH" and c.shown(tls_active))

    def pop3_capa_lines(self, tls_active: bool) -> list[str]:
        values = self.values()
        return [format_template(c.text, values) for c in self.pop3_capabilities if c.shown(tls_active)]

    def pop3_sasl_mechanisms(self, tls_active: bool) -> list[str]:
        return _mechanisms(c.text for c in self.pop3_capabilities if c.keyword == "SASL" and c.shown(tls_active))

    def pop3_has(self, keyword: str, tls_active: bool) -> bool:
        return any(c.keyword == keyword and c.shown(tls_active) for c in self.pop3_capabilities)

    # --- accounts and domains ------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    def find_account(self, login: str) -> Account | None:
        """Look an account up by full address, or by local part when that is unambiguous."""
        wanted = login.strip().lower()
        by_address, by_local_part = self._account_index()
        account = by_address.get(wanted)
        if account is not None:
            return account
        if "@" not in wanted:
            matches = by_local_part.get(wanted, ())
            if len(matches) == 1:
                return matches[0]
        return None

    def _account_index(self) -> tuple[dict[str, Account], dict[str, list[Account]]]:
        """Accounts by address (the first of a duplicate wins) and by local part, built once: every
        command that names a user looks one up, and a classroom has a thousand."""
        index = self._cache.get("accounts")
        if index is None:
            by_address: dict[str, Account] = {}
            by_local_part: dict[str, list[Account]] = {}
            for account in self.accounts:
                by_address.setdefault(account.address, account)
                by_local_part.setdefault(account.local_part, []).append(account)
            index = self._cache["accounts"] = (by_address, by_local_part)
        return index

    def with_accounts(self, extra: Iterable[Account]) -> "Profile":
        """A copy with more accounts; their domains become local domains."""
        accounts = list(self.accounts)
        domains = list(self.local_domains)
        for account in extra:
            accounts = [a for a in accounts if a.address != account.address] + [account]
            if account.domain not in domains:
                domains.append(account.domain)
        return replace(self, accounts=tuple(accounts), local_domains=tuple(domains))

    def with_faults(self, rules: Iterable[Any], seed: int | None = None) -> "Profile":
        """A copy with more fault rules (from `--fault`), renumbered after the profile's own."""
        extra = [replace(rule, index=len(self.faults) + i) for i, rule in enumerate(rules)]
        return replace(self, faults=self.faults + tuple(extra), seed=self.seed if seed is None else seed)


def _mechanisms(lines: Iterable[str]) -> list[str]:
    found: list[str] = []
    for line in lines:
        for token in re.split(r"[ =]", line)[1:]:
            token = token.upper()
            if token and token not in found:
                found.append(token)
    return found


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and check a persona by name or path; the first problem raises ProfileError."""
    path = resolve_profile_path(str(name_or_path)).resolve()
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _load_checked(path, stamp)


@functools.lru_cache(maxsize=64)
def _load_checked(path: Path, stamp: int) -> Profile:
    """Profiles are immutable, so a file that has not changed is parsed and linted once."""
    sources = load_sources(path)
    problems = [p for p in check_sources(sources) if p.severity == "error"]
    if problems:
        first = problems[0]
        error = ProfileError(first.file, first.line, first.message)
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    return build_profile(sources)


def _lines(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split("\n"))
    return tuple(value)


def build_profile(sources: ProfileSources) -> Profile:
    """Turn checked TOML tables into a Profile (lint has already refused bad input)."""
    from mailprotocol.faults import rule_from_table

    raw = sources.merged()
    source = sources.path
    identity = raw.get("identity", {})
    hostname = identity.get("hostname", "localhost")
    smtp_section = raw.get("smtp", {})
    pop3_section = raw.get("pop3", {})
    quirks = Quirks(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("quirks", {}).items()})

    capabilities = tuple(_capability(c) for c in smtp_section.get("capabilities", ()))
    advertised = any(c.keyword == "ENHANCEDSTATUSCODES" for c in capabilities)
    smtp_replies = {key: _lines(value) for key, value in smtp_section.get("replies", {}).items()}
    mode = quirks.enhanced_codes
    if not advertised or mode == "never":
        smtp_replies = {k: tuple(strip_enhanced(line) for line in v) for k, v in smtp_replies.items()}
    elif mode == "success-only":
        smtp_replies = {
            k: tuple(strip_enhanced(line) if line[:1] in "45" else line for line in v) for k, v in smtp_replies.items()
        }

    pop3_greeting = pop3_section.get("greeting", "+OK POP3 server ready {timestamp}")
    pop3_replies = {key: _lines(value) for key, value in pop3_section.get("replies", {}).items()}
    pop3_replies["greeting"] = (pop3_greeting,)

    accounts = tuple(
        Account(
            address=str(entry["address"]).strip().lower(),
            secret=str(entry["secret"]),
            secret_kind=str(entry.get("secret_kind", "password")),
            password=entry.get("password"),
            note=str(entry.get("note", "")),
        )
        for entry in raw.get("accounts", ())
    )
    policy_values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.get("policies", {}).items()}
    for key in ("smtp_idle_timeout", "pop3_idle_timeout", "greylist_delay", "tarpit_delay", "login_delay"):
        if key in policy_values:
            policy_values[key] = float(policy_values[key])
    policies = Policies(**policy_values)
    domains = raw.get("domains", {})
    local_domains = tuple(dict.fromkeys([str(d).lower() for d in domains.get("local", [])] + [a.domain for a in accounts]))

    faults = []
    for index, table in enumerate(raw.get("faults", ())):
        faults.append(rule_from_table(table, index, sources.where(("faults", index))[1]))

    mail = []
    for index, entry in enumerate(raw.get("mail", ())):
        file, _ = sources.where(("mail", index))
        if "file" in entry:
            origin = file.parent / entry["file"]
            content = origin.read_bytes()
            label = str(origin)
        else:
            content = entry["content"].encode("utf-8")
            label = f"{file.name} mail #{index + 1}"
        content = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
        if not content.endswith(b"\r\n"):
            content += b"\r\n"
        mail.append(PreloadedMail(str(entry["to"]).lower(), content, label))

    return Profile(
        name=str(raw.get("name", source.stem)),
        description=str(raw.get("description", "")),
        source=source,
        hostname=hostname,
        pop3_hostname=identity.get("pop3_hostname", hostname),
        implementation=identity.get("implementation", "maillab"),
        smtp_replies=smtp_replies,
        pop3_replies=pop3_replies,
        pop3_greeting=pop3_greeting,
        smtp_capabilities=capabilities,
        pop3_capabilities=tuple(_capability(c) for c in pop3_section.get("capabilities", ())),
        accounts=accounts,
        local_domains=local_domains,
        policies=policies,
        quirks=quirks,
        relay_domains=tuple(str(d).lower() for d in domains.get("relay", [])),
        smtp_close_after=frozenset(smtp_section.get("close_after", ())),
        pop3_close_after=frozenset(pop3_section.get("close_after", ())),
        preloaded_mail=tuple(mail),
        faults=tuple(faults),
        seed=int(raw.get("seed", 0)),
        raw=raw,
    )


def _capability(entry: Any) -> Capability:
    if isinstance(entry, str):
        return Capability(entry)
    return Capability(entry["text"], entry.get("when", "always"))


