"""Profiles: a persona's identity, reply texts, capabilities, accounts and policies, as data.

Protocol code never holds a reply text: it names a reply key ("mail_ok", "need_helo") and the
profile renders it. Bundled personas are TOML files in `mockservers/personas/`; an instructor's
profile is the same format and may `extends = "qq"` (or a path) to override any part.

No Twisted imports: the simulator's engine reads profiles too.
"""

from __future__ import annotations

import functools
import re
import string
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from .output import DEFAULT_MAX_BYTES, DEFAULT_MAX_LOG_LINES

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
    """How strict the persona is; every field is a switch or a number an instructor sets.

    docs/profiles.md documents each one with an example.
    """

    strict_syntax: bool = True
    require_helo: bool = True
    helo_check: str = "none"
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


#: Control characters never leave in a reply: a value echoed from the client (an address, a VRFY
#: argument) may carry a bare CR or ESC, which would split or rewrite the line on the learner's side.
_REPLY_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Widest field a reply template may ask for (`{size:>9999999999}` would allocate gigabytes).
_MAX_FIELD_WIDTH = 256


class _Template(string.Formatter):
    """str.format for reply templates: data only.

    Unknown placeholders stay visible instead of raising. A placeholder is a plain name: attribute
    and index lookups (`{host.__class__}`) are left as literal text, never evaluated, so a profile
    or a lesson's `profile_overrides` cannot walk Python objects; a format spec wider than
    _MAX_FIELD_WIDTH is ignored; control characters in substituted values become `?`.
    """

    def get_value(self, key: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, str) and key in kwargs:
            return kwargs[key]
        return "{" + str(key) + "}"

    def get_field(self, field_name: str, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if not field_name.isidentifier():
            return "{" + field_name + "}", field_name
        return self.get_value(field_name, args, kwargs), field_name

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        return value  # no !r / !s / !a: a template shows values, it does not inspect them

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec and any(int(n) > _MAX_FIELD_WIDTH for n in re.findall(r"\d+", format_spec)):
            format_spec = ""
        try:
            text = format(value, format_spec)
        except (ValueError, TypeError):
            text = str(value)
        return _REPLY_CONTROL.sub("?", text)


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
        return [_FORMATTER.vformat(c.text, (), values) for c in self.pop3_capabilities if c.shown(tls_active)]

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


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*")(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"))*)\s*=""")


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"') for part in re.findall(r'"[^"]*"|[^.]+', text))


def locate(text: str, path: tuple[Any, ...]) -> int | None:
    """Line number of a key in TOML source, for `file:line` messages.

    `path` may hold an int after an array-of-tables name: ("faults", 2, "reply") is the `reply` of
    the third `[[faults]]`. Falls back to the nearest enclosing table or key.
    """
    section: tuple[Any, ...] = ()
    counters: dict[tuple[Any, ...], int] = {}
    best: tuple[int, int] | None = None  # (matched length, line)
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = counters.get(name, -1) + 1
                counters[name] = index
                section = name + (index,)
            else:
                section = name
            candidate = section
        else:
            key = _KEY.match(line)
            if not key:
                continue
            candidate = section + _split_key(key.group(1))
        length = 0
        while length < min(len(candidate), len(path)) and candidate[length] == path[length]:
            length += 1
        if length == len(candidate) == len(path):
            return number
        if length == len(candidate) and (best is None or length > best[0]):
            best = (length, number)
    return best[1] if best else None


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(path, None, "no such profile file") from None
    except OSError as error:
        raise ProfileError(path, None, f"cannot read profile: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ProfileError(path, None, "profile is not UTF-8 text") from None
    if not text.strip():
        raise ProfileError(path, None, "profile file is empty")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        line = getattr(error, "lineno", None)
        message = getattr(error, "msg", str(error))
        if line is None:
            m = re.search(r"line (\d+)", str(error))
            line = int(m.group(1)) if m else None
            message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
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


@dataclass
class ProfileSources:
    """The files of an `extends` chain, child first, with their parsed tables and text."""

    chain: list[tuple[Path, dict[str, Any], str]]

    @property
    def path(self) -> Path:
        return self.chain[0][0]

    def merged(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        for _, data, _ in reversed(self.chain):
            raw = _merge(raw, {k: v for k, v in data.items() if k != "extends"})
        return raw

    def where(self, path: tuple[Any, ...]) -> tuple[Path, int | None]:
        """The file (child first) that defines `path`, and its line."""
        for file, data, text in self.chain:
            if _has(data, path):
                return file, locate(text, path)
        file, _, text = self.chain[0]
        return file, locate(text, path)


def _has(data: Any, path: tuple[Any, ...]) -> bool:
    for part in path:
        if isinstance(part, int):
            if not isinstance(data, list) or part >= len(data):
                return False
            data = data[part]
        elif isinstance(data, Mapping) and part in data:
            data = data[part]
        else:
            return False
    return True


def load_sources(path: Path) -> ProfileSources:
    """Read a profile and every file it extends (cycles and bad `extends` are errors)."""
    chain: list[tuple[Path, dict[str, Any], str]] = []
    seen: list[Path] = []
    current = path
    while True:
        current = current.resolve()
        if current in seen:
            raise ProfileError(seen[0], None, "profile extends itself: " + " -> ".join(p.name for p in seen + [current]))
        seen.append(current)
        data, text = _read_toml(current)
        chain.append((current, data, text))
        parent = data.get("extends")
        if parent is None:
            return ProfileSources(chain)
        if not isinstance(parent, str):
            raise ProfileError(current, locate(text, ("extends",)), "extends must be a persona name or a path")
        try:
            current = resolve_profile_path(parent, relative_to=current.parent)
        except ProfileError as error:
            raise ProfileError(current, locate(text, ("extends",)), error.message) from None


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
    from .lint import check_sources

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
    from .faults import rule_from_table

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
        smtp_replies = {k: tuple(_strip_enhanced(line) for line in v) for k, v in smtp_replies.items()}
    elif mode == "success-only":
        smtp_replies = {
            k: tuple(_strip_enhanced(line) if line[:1] in "45" else line for line in v) for k, v in smtp_replies.items()
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


def _strip_enhanced(line: str) -> str:
    """Drop an RFC 3463 code: servers that do not advertise ENHANCEDSTATUSCODES must not send one."""
    if len(line) > 4 and _ENHANCED.match(line[4:]):
        return line[:4] + _ENHANCED.sub("", line[4:], count=1)
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
