"""Profiles: a persona's identity, reply texts, capabilities, accounts and policies, as data.

Protocol code never holds a reply text: it names a reply key ("mail_ok", "need_helo") and the
profile renders it. Bundled personas are TOML files in `mockservers/personas/`; an instructor's
profile is the same format and may `extends = "qq"` (or a path) to override any part.

No Twisted imports: the simulator's engine reads profiles too.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

PERSONA_DIR = Path(__file__).with_name("personas")

_REPLY_LINE = re.compile(r"^(?P<code>[2-5]\d\d)(?P<sep>[ -]?)(?P<text>.*)$", re.DOTALL)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")


class ProfileError(Exception):
    """A profile that cannot be used; `str()` is `file:line: what is wrong`."""

    def __init__(self, source: Path | str, line: int | None, message: str) -> None:
        self.source = str(source)
        self.line = line
        self.message = message
        where = f"{self.source}:{line}" if line else self.source
        super().__init__(f"{where}: {message}")


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
    """How strict the persona is; every field is a switch or a number an instructor sets."""

    strict_syntax: bool = True
    require_helo: bool = True
    require_auth_for_mail: bool = False
    sender_must_match_auth: bool = False
    require_tls_for_auth: bool = False
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


_POLICY_CHOICES = {
    "relay": ("authenticated", "never", "open"),
    "vrfy": ("252", "verify", "disabled"),
    "expn": ("252", "verify", "disabled"),
}


class _Template(string.Formatter):
    """str.format that leaves unknown placeholders visible instead of raising."""

    def get_value(self, key: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        return "{" + str(key) + "}"


_FORMATTER = _Template()


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in _FORMATTER.parse(template) if name]


def render_smtp(template_lines: tuple[str, ...], values: Mapping[str, Any]) -> list[str]:
    """Render a reply template to wire lines with correct `250-`/`250 ` continuation."""
    out: list[str] = []
    last = len(template_lines) - 1
    for index, template in enumerate(template_lines):
        text = _FORMATTER.vformat(template, (), values) if "{" in template else template
        match = _REPLY_LINE.match(text)
        assert match is not None, text  # checked at load time
        sep = " " if index == last else "-"
        out.append(f"{match['code']}{sep}{match['text']}")
    return out


def render_pop3(template_lines: tuple[str, ...], values: Mapping[str, Any]) -> list[str]:
    """Render a POP3 status line (single line by RFC 1939)."""
    return [_FORMATTER.vformat(t, (), values) if "{" in t else t for t in template_lines]


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
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

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
        caps = tuple(
            f"250 {c.text}" for c in self.smtp_capabilities if c.shown(tls_active)
        )
        return render_smtp(first + caps, self.values(**values))

    def smtp_extensions(self, tls_active: bool) -> frozenset[str]:
        """Keywords whose behaviour is on: an extension works only where it is advertised."""
        return frozenset(self.ehlo_keywords(tls_active))

    def smtp_auth_mechanisms(self, tls_active: bool) -> list[str]:
        return _mechanisms(
            c.text for c in self.smtp_capabilities if c.keyword == "AUTH" and c.shown(tls_active)
        )

    def pop3_capa_lines(self, tls_active: bool) -> list[str]:
        values = self.values()
        return [
            _FORMATTER.vformat(c.text, (), values)
            for c in self.pop3_capabilities
            if c.shown(tls_active)
        ]

    def pop3_sasl_mechanisms(self, tls_active: bool) -> list[str]:
        return _mechanisms(
            c.text for c in self.pop3_capabilities if c.keyword == "SASL" and c.shown(tls_active)
        )

    def pop3_has(self, keyword: str, tls_active: bool) -> bool:
        return any(c.keyword == keyword and c.shown(tls_active) for c in self.pop3_capabilities)

    # --- accounts and domains ------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    def find_account(self, login: str) -> Account | None:
        """Look an account up by full address, or by local part when that is unambiguous."""
        wanted = login.strip().lower()
        for account in self.accounts:
            if account.address == wanted:
                return account
        if "@" not in wanted:
            matches = [a for a in self.accounts if a.local_part == wanted]
            if len(matches) == 1:
                return matches[0]
        return None

    def with_accounts(self, extra: Iterable[Account]) -> "Profile":
        """A copy with more accounts; their domains become local domains."""
        accounts = list(self.accounts)
        domains = list(self.local_domains)
        for account in extra:
            accounts = [a for a in accounts if a.address != account.address] + [account]
            if account.domain not in domains:
                domains.append(account.domain)
        return replace(self, accounts=tuple(accounts), local_domains=tuple(domains))


def _mechanisms(lines: Iterable[str]) -> list[str]:
    found: list[str] = []
    for line in lines:
        for token in re.split(r"[ =]", line)[1:]:
            token = token.upper()
            if token and token not in found:
                found.append(token)
    return found


# --- loading -----------------------------------------------------------------------------


def bundled_personas() -> list[str]:
    """Names of the personas shipped with maillab."""
    return sorted(p.stem for p in PERSONA_DIR.glob("*.toml"))


def resolve_profile_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A bundled persona name, or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path or "\\" in name_or_path:
        if not candidate.is_absolute() and relative_to is not None:
            candidate = relative_to / candidate
        return candidate
    bundled = PERSONA_DIR / f"{name_or_path}.toml"
    if bundled.exists():
        return bundled
    raise ProfileError(
        name_or_path, None, f"no persona named {name_or_path!r} (known: {', '.join(bundled_personas())})"
    )


def locate(text: str, path: tuple[str, ...]) -> int | None:
    """Best-effort line number of a dotted key in TOML source, for `file:line` messages."""
    section: tuple[str, ...] = ()
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
    key_re = re.compile(r"^\s*([A-Za-z0-9_\-\"\.]+)\s*=")
    best: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = header.match(line)
        if m:
            section = tuple(part.strip().strip('"') for part in m.group(1).split("."))
            if section == path:
                best = best or number
            continue
        k = key_re.match(line)
        if k:
            key = tuple(part.strip('"') for part in k.group(1).split("."))
            if section + key == path:
                return number
            if path[: len(section) + len(key)] == section + key and best is None:
                best = number
    return best


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ProfileError(path, None, f"cannot read profile: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ProfileError(path, None, "profile is not UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        line = getattr(error, "lineno", None)
        message = getattr(error, "msg", str(error))
        if line is None:
            m = re.search(r"line (\d+)", str(error))
            line = int(m.group(1)) if m else None
        raise ProfileError(path, line, f"TOML syntax error: {message}") from None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (lists included) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_raw(path: Path, _seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[Path, str]]:
    """The merged TOML tables of a profile and its `extends` chain, with each file's source."""
    path = path.resolve()
    if path in _seen:
        raise ProfileError(path, None, "profile extends itself (cycle: " + " -> ".join(map(str, _seen + (path,))) + ")")
    data, text = _read_toml(path)
    sources = {path: text}
    parent = data.get("extends")
    if parent is None:
        return data, sources
    if not isinstance(parent, str):
        raise ProfileError(path, locate(text, ("extends",)), "extends must be a persona name or a path")
    try:
        parent_path = resolve_profile_path(parent, relative_to=path.parent)
    except ProfileError as error:
        raise ProfileError(path, locate(text, ("extends",)), error.message) from None
    base, base_sources = load_raw(parent_path, _seen + (path,))
    sources.update(base_sources)
    own = {k: v for k, v in data.items() if k != "extends"}
    return _merge(base, own), sources


def load_profile(name_or_path: str | Path) -> Profile:
    """Load and validate a persona by name or path; raise ProfileError with file:line."""
    path = resolve_profile_path(str(name_or_path))
    raw, sources = load_raw(path)
    return build_profile(raw, path.resolve(), sources[path.resolve()])


def _lines(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split("\n"))
    return tuple(value)


def build_profile(raw: Mapping[str, Any], source: Path, text: str = "") -> Profile:
    """Turn merged TOML tables into a Profile, checking what the servers rely on."""

    def fail(path: tuple[str, ...], message: str) -> ProfileError:
        return ProfileError(source, locate(text, path), message)

    identity = raw.get("identity", {})
    hostname = identity.get("hostname", "localhost")
    smtp_section = raw.get("smtp", {})
    pop3_section = raw.get("pop3", {})

    smtp_replies: dict[str, tuple[str, ...]] = {}
    for key, value in smtp_section.get("replies", {}).items():
        lines = _lines(value)
        if not lines or not all(isinstance(line, str) for line in lines):
            raise fail(("smtp", "replies", key), f"reply {key!r} must be a string or a list of strings")
        for line in lines:
            if not _REPLY_LINE.match(line) or (len(line) > 3 and line[3] not in " -"):
                raise fail(("smtp", "replies", key), f"reply {key!r} line {line!r} must start with a 3-digit code 2xx-5xx")
        smtp_replies[key] = lines

    capabilities = tuple(_capability(c, fail, ("smtp", "capabilities")) for c in smtp_section.get("capabilities", ()))
    if not any(c.keyword == "ENHANCEDSTATUSCODES" for c in capabilities):
        smtp_replies = {k: tuple(_strip_enhanced(line) for line in v) for k, v in smtp_replies.items()}

    pop3_replies: dict[str, tuple[str, ...]] = {}
    for key, value in pop3_section.get("replies", {}).items():
        lines = _lines(value)
        for line in lines:
            if not (line.startswith("+OK") or line.startswith("-ERR") or line.startswith("+ ") or line == "+"):
                raise fail(("pop3", "replies", key), f"POP3 reply {key!r} must start with +OK, -ERR or '+ '")
        pop3_replies[key] = lines

    accounts = []
    for index, entry in enumerate(raw.get("accounts", ())):
        if not isinstance(entry, Mapping) or "address" not in entry or "secret" not in entry:
            raise fail(("accounts",), f"account #{index + 1} needs an address and a secret")
        address = str(entry["address"]).strip().lower()
        if address.count("@") != 1 or address.startswith("@") or address.endswith("@"):
            raise fail(("accounts",), f"account #{index + 1}: {address!r} is not an address")
        accounts.append(
            Account(
                address=address,
                secret=str(entry["secret"]),
                secret_kind=str(entry.get("secret_kind", "password")),
                password=entry.get("password"),
                note=str(entry.get("note", "")),
            )
        )

    policy_values = dict(raw.get("policies", {}))
    known = {f for f in Policies.__dataclass_fields__}
    for key, value in policy_values.items():
        if key not in known:
            raise fail(("policies", key), f"unknown policy {key!r}")
        default = getattr(Policies(), key)
        if isinstance(default, bool) != isinstance(value, bool) or (
            not isinstance(value, type(default)) and not (isinstance(default, float) and isinstance(value, int))
        ):
            raise fail(("policies", key), f"policy {key!r} must be {type(default).__name__}, got {value!r}")
        if key in _POLICY_CHOICES and value not in _POLICY_CHOICES[key]:
            raise fail(("policies", key), f"policy {key!r} must be one of {', '.join(_POLICY_CHOICES[key])}")
    policies = Policies(**policy_values)

    domains = raw.get("domains", {}).get("local", [])
    local_domains = tuple(dict.fromkeys([str(d).lower() for d in domains] + [a.domain for a in accounts]))

    pop3_greeting = pop3_section.get("greeting", "+OK POP3 server ready {timestamp}")
    pop3_replies["greeting"] = (pop3_greeting,)

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
        pop3_capabilities=tuple(_capability(c, fail, ("pop3", "capabilities")) for c in pop3_section.get("capabilities", ())),
        accounts=tuple(accounts),
        local_domains=local_domains,
        policies=policies,
        raw=raw,
    )


def _capability(entry: Any, fail: Any, where: tuple[str, ...]) -> Capability:
    if isinstance(entry, str):
        return Capability(entry)
    if isinstance(entry, Mapping) and isinstance(entry.get("text"), str):
        when = entry.get("when", "always")
        if when not in ("always", "plain", "tls"):
            raise fail(where, f"capability {entry['text']!r}: when must be always, plain or tls")
        return Capability(entry["text"], when)
    raise fail(where, f"capability {entry!r} must be a string or {{ text = ..., when = ... }}")


def _strip_enhanced(line: str) -> str:
    """Drop an RFC 3463 code: servers that do not advertise ENHANCEDSTATUSCODES must not send one."""
    if len(line) > 4 and _ENHANCED.match(line[4:]):
        rest = _ENHANCED.sub("", line[4:], count=1)
        return line[:4] + rest
    return line


def parse_account(spec: str) -> Account:
    """`ADDRESS:SECRET` from the command line."""
    address, sep, secret = spec.partition(":")
    address = address.strip().lower()
    if not sep or not secret:
        raise ValueError(f"account {spec!r} must be ADDRESS:SECRET")
    if address.count("@") != 1 or address.startswith("@") or address.endswith("@") or "/" in address:
        raise ValueError(f"account {spec!r}: {address!r} is not a mail address")
    return Account(address=address, secret=secret)
