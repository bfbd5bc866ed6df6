"""World files: the domains of a lab internet, their personas, ports, accounts and DNS records.

A world file is TOML (docs/world.md). `lint_world` lists every problem as `file:line: message`,
like a profile's lint; `load_world` refuses a file with an error, so a broken world never starts.
Pure Python: the app and the linter read worlds without Twisted.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..accounts import Account
from ..lint import Problem
from ..profile_files import ProfileError, locate, resolve_profile_path, toml_error_position

WORLD_DIR = Path(__file__).with_name("worlds")
DEFAULT_WORLD = WORLD_DIR / "default.toml"

#: Postfix's defaults (PROTOCOL-FACTS.md section 5): first retry after 300 s, backoff up to
#: 4000 s, give up after 5 days.
FIRST_RETRY = 300.0
MAX_BACKOFF = 4000.0
QUEUE_LIFETIME = 5 * 24 * 3600.0

_DOMAIN_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")

#: key -> (type, description) of the [world] table and of each [[domain]].
WORLD_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a string"),
    "dns_port": (int, "a port number"),
    "relay_port": (int, "a port number"),
    "time_scale": ((int, float), "a number"),
    "first_retry": ((int, float), "a number of seconds"),
    "max_backoff": ((int, float), "a number of seconds"),
    "queue_lifetime": ((int, float), "a number of seconds"),
}
DOMAIN_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a domain name"),
    "persona": (str, "a persona name or profile path"),
    "address": (str, "a loopback IPv4 address"),
    "submission_port": (int, "a port number"),
    "smtps_port": (int, "a port number"),
    "pop3_port": (int, "a port number"),
    "pop3s_port": (int, "a port number"),
    "accounts": (list, "a list of \"user:secret\" strings"),
    "full_mailboxes": (list, "a list of user names"),
    "greylist_delay": ((int, float), "a number of seconds"),
    "spf": (str, "an SPF record (v=spf1 ...)"),
    "dmarc": (str, "a DMARC record (v=DMARC1; p=...)"),
    "dkim_selector": (str, "a DNS label"),
    "dkim_sign": (bool, "true or false"),
    "enforce_dmarc": (bool, "true or false"),
    "records": (list, "a list of \"NAME TYPE VALUE\" strings"),
}
RECORD_TYPES = ("A", "MX", "TXT")


class WorldError(ProfileError):
    """A world file that cannot be used; `str()` is `file:line: what is wrong`."""


@dataclass(frozen=True)
class DnsRecord:
    """One resource record the world's DNS serves."""

    name: str
    type: str  # "A", "MX" or "TXT" (a file's records); "PTR" generated for the reverse zone
    value: str
    preference: int = 10  # MX only


@dataclass(frozen=True)
class Domain:
    """One mail domain of the world: a persona on its own loopback address and ports."""

    name: str
    persona: str
    address: str
    submission_port: int | None
    smtps_port: int | None
    pop3_port: int | None
    pop3s_port: int | None
    accounts: tuple[Account, ...]
    full_mailboxes: tuple[str, ...] = ()
    greylist_delay: float = 0.0
    spf: str = ""
    dmarc: str = ""
    dkim_selector: str = "lab"
    dkim_sign: bool = True
    enforce_dmarc: bool = False
    extra_records: tuple[DnsRecord, ...] = ()

    @property
    def mx_host(self) -> str:
        """The MX host name; the receiving server says `by mx.<domain>` in its Received line."""
        return f"mx.{self.name}"

    @property
    def smtp_host(self) -> str:
        """The submission host name, like smtp.qq.com for QQ's users."""
        return f"smtp.{self.name}"

    @property
    def pop3_host(self) -> str:
        return f"pop.{self.name}"

    @property
    def spf_record(self) -> str:
        return self.spf or f"v=spf1 ip4:{self.address} -all"

    @property
    def dmarc_record(self) -> str:
        return self.dmarc or "v=DMARC1; p=none"


@dataclass(frozen=True)
class World:
    """A whole lab internet read from one file."""

    name: str
    source: Path
    domains: tuple[Domain, ...]
    dns_port: int = 10053
    relay_port: int = 10025
    time_scale: float = 1.0
    first_retry: float = FIRST_RETRY
    max_backoff: float = MAX_BACKOFF
    queue_lifetime: float = QUEUE_LIFETIME
    host: str = "127.0.0.1"  # where DNS and the submission/POP3 listeners bind

    @property
    def reach_host(self) -> str:
        """Where this machine reaches the world's DNS: the address it binds, or 127.0.0.1 when it
        binds every interface (a classroom world served with --host 0.0.0.0)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def domain(self, name: str) -> Domain | None:
        wanted = name.strip().lower().rstrip(".")
        return next((d for d in self.domains if d.name == wanted), None)

    def free_ports(self) -> "World":
        """Every listener on a free port: two worlds (or a test and a class) never collide."""
        from dataclasses import replace

        domains = tuple(
            replace(d, submission_port=0, smtps_port=0, pop3_port=0, pop3s_port=0) for d in self.domains
        )
        return replace(self, domains=domains, dns_port=0, relay_port=0)


def _read(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorldError(path, None, "no such world file") from None
    except OSError as error:
        raise WorldError(path, None, f"cannot read world file: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise WorldError(path, None, "world file is not UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as error:
        line, message = toml_error_position(error)
        raise WorldError(path, line, f"TOML syntax error: {message}") from None


def _parse_account(spec: str, domain: str) -> Account:
    user, sep, secret = spec.partition(":")
    user = user.strip().lower()
    if "@" in user:
        local, _, at_domain = user.partition("@")
        if at_domain != domain:
            raise ValueError(f"account {user!r} is not in the domain {domain}")
        user = local
    if not sep or not secret:
        raise ValueError(f"account {spec!r} must be \"user:secret\"")
    if not _LOCAL_PART.match(user):
        raise ValueError(f"account {spec!r}: {user!r} is not a valid local part")
    return Account(address=f"{user}@{domain}", secret=secret)


def _parse_record(spec: str) -> DnsRecord:
    """`NAME TYPE VALUE`, e.g. `mx2.qq.lab A 127.0.0.9`, `qq.lab MX 20 mx2.qq.lab`."""
    parts = spec.split(None, 2)
    if len(parts) < 3:
        raise ValueError(f"record {spec!r} must be \"NAME TYPE VALUE\"")
    name, kind, value = parts[0].lower().rstrip("."), parts[1].upper(), parts[2]
    if kind not in RECORD_TYPES:
        raise ValueError(f"record {spec!r}: type {kind} is not one of {', '.join(RECORD_TYPES)}")
    if not _DOMAIN_NAME.match(name) and not name.startswith("_"):
        raise ValueError(f"record {spec!r}: {name!r} is not a domain name")
    if kind == "A":
        _check_loopback(value)
        return DnsRecord(name, kind, value)
    if kind == "MX":
        preference, _, target = value.partition(" ")
        if not preference.isdigit() or not target.strip():
            raise ValueError(f"record {spec!r}: an MX value is \"PREFERENCE HOST\"")
        return DnsRecord(name, kind, target.strip().lower().rstrip(".") or ".", int(preference))
    return DnsRecord(name, kind, value)


def _check_loopback(value: str) -> None:
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None
    if not address.is_loopback:
        raise ValueError(f"{value} is not a loopback address (127.0.0.0/8): the lab never leaves this machine")


def check_world(path: Path, data: dict[str, Any], text: str) -> tuple[list[Problem], World | None]:
    """Every problem of a parsed world file, and the World when there is no error."""
    problems: list[Problem] = []

    def problem(where: tuple[Any, ...], message: str) -> None:
        problems.append(Problem(str(path), locate(text, where), message))

    def typed(table: dict[str, Any], keys: dict, where: tuple[Any, ...]) -> dict[str, Any]:
        good: dict[str, Any] = {}
        for key, value in table.items():
            if key not in keys:
                problem(where + (key,), f"unknown key {key!r} (known: {', '.join(keys)})")
                continue
            kind, description = keys[key]
            if isinstance(value, bool) and kind is not bool:
                problem(where + (key,), f"{key} must be {description}")
            elif not isinstance(value, kind):
                problem(where + (key,), f"{key} must be {description}")
            elif key.endswith("_port") and not 0 <= value <= 65535:
                problem(where + (key,), f"{key} {value} is not a port number (0-65535; 0 picks a free port)")
            else:
                good[key] = value
        return good

    for key in data:
        if key not in ("world", "domain"):
            problem((key,), f"unknown table {key!r} (a world file has [world] and [[domain]] tables)")
    world_table = data.get("world", {})
    if not isinstance(world_table, dict):
        problem(("world",), "world must be a table: [world]")
        world_table = {}
    settings = typed(world_table, WORLD_KEYS, ("world",))
    if settings.get("time_scale", 1) <= 0:
        problem(("world", "time_scale"), "time_scale must be greater than 0")
    tables = data.get("domain", [])
    if not isinstance(tables, list) or not tables:
        problem(("domain",), "a world needs at least one [[domain]]")
        tables = []
    domains: list[Domain] = []
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, str] = {}
    seen_ports: dict[int, str] = {}
    for index, table in enumerate(tables):
        where: tuple[Any, ...] = ("domain", index)
        if not isinstance(table, dict):
            problem(where, "each domain must be a [[domain]] table")
            continue
        values = typed(table, DOMAIN_KEYS, where)
        name = str(values.get("name", "")).lower().rstrip(".")
        for required in ("name", "persona", "address"):
            if required not in table:
                problem(where, f"domain {index + 1} has no {required}")
        if name and not _DOMAIN_NAME.match(name):
            problem(where + ("name",), f"{name!r} is not a domain name")
        if name in seen_names:
            problem(where + ("name",), f"domain {name} is listed twice")
        seen_names[name] = index
        persona = values.get("persona")
        if persona is not None:
            try:
                resolve_profile_path(persona, relative_to=path.parent)
            except ProfileError as error:
                problem(where + ("persona",), error.message)
        address = values.get("address")
        if address is not None:
            try:
                _check_loopback(address)
            except ValueError as error:
                problem(where + ("address",), str(error))
            if address in seen_addresses:
                problem(where + ("address",), f"address {address} is already the address of {seen_addresses[address]}")
            seen_addresses[address] = name
        for key in ("submission_port", "smtps_port", "pop3_port", "pop3s_port"):
            port = values.get(key)
            if port:
                if port in seen_ports:
                    problem(where + (key,), f"port {port} is already used by {seen_ports[port]}")
                seen_ports[port] = f"{name} {key}"
        accounts: list[Account] = []
        for spec in values.get("accounts", []):
            try:
                if not isinstance(spec, str):
                    raise ValueError(f"account {spec!r} must be a \"user:secret\" string")
                account = _parse_account(spec, name)
            except ValueError as error:
                problem(where + ("accounts",), str(error))
                continue
            if any(a.address == account.address for a in accounts):
                problem(where + ("accounts",), f"account {account.address} is listed twice")
            accounts.append(account)
        full = []
        for user in values.get("full_mailboxes", []):
            address_of = f"{str(user).lower()}@{name}" if "@" not in str(user) else str(user).lower()
            if not any(a.address == address_of for a in accounts):
                problem(where + ("full_mailboxes",), f"{address_of} is not an account of {name}")
            full.append(address_of)
        records: list[DnsRecord] = []
        for spec in values.get("records", []):
            try:
                records.append(_parse_record(str(spec)))
            except ValueError as error:
                problem(where + ("records",), str(error))
        if "spf" in values and not values["spf"].startswith("v=spf1"):
            problem(where + ("spf",), "an SPF record starts with v=spf1 (RFC 7208 4.5)")
        if "dmarc" in values and not re.match(r"^v=DMARC1;\s*p=(none|quarantine|reject)\b", values["dmarc"]):
            problem(where + ("dmarc",), "a DMARC record starts with v=DMARC1; p=none|quarantine|reject (RFC 7489 6.3)")
        if values.get("greylist_delay", 0) < 0:
            problem(where + ("greylist_delay",), "greylist_delay cannot be negative")
        if name and persona is not None and address is not None:
            domains.append(
                Domain(
                    name=name,
                    persona=persona,
                    address=address,
                    submission_port=values.get("submission_port"),
                    smtps_port=values.get("smtps_port"),
                    pop3_port=values.get("pop3_port"),
                    pop3s_port=values.get("pop3s_port"),
                    accounts=tuple(accounts),
                    full_mailboxes=tuple(full),
                    greylist_delay=float(values.get("greylist_delay", 0)),
                    spf=values.get("spf", ""),
                    dmarc=values.get("dmarc", ""),
                    dkim_selector=values.get("dkim_selector", "lab"),
                    dkim_sign=values.get("dkim_sign", True),
                    enforce_dmarc=values.get("enforce_dmarc", False),
                    extra_records=tuple(records),
                )
            )
    dns_port = settings.get("dns_port", 10053)
    relay_port = settings.get("relay_port", 10025)
    for key, port in (("dns_port", dns_port), ("relay_port", relay_port)):
        if port and port in seen_ports:
            problem(("world", key), f"port {port} is already used by {seen_ports[port]}")
    if problems:
        return problems, None
    world = World(
        name=settings.get("name", path.stem),
        source=path,
        domains=tuple(domains),
        dns_port=dns_port,
        relay_port=relay_port,
        time_scale=float(settings.get("time_scale", 1)),
        first_retry=float(settings.get("first_retry", FIRST_RETRY)),
        max_backoff=float(settings.get("max_backoff", MAX_BACKOFF)),
        queue_lifetime=float(settings.get("queue_lifetime", QUEUE_LIFETIME)),
    )
    return problems, world


def lint_world(path: str | Path) -> list[Problem]:
    """All problems of a world file."""
    path = Path(path)
    try:
        data, text = _read(path)
    except WorldError as error:
        return [Problem(error.source, error.line, error.message)]
    return check_world(path, data, text)[0]


def load_world(path: str | Path | None = None) -> World:
    """Read and check a world file (the bundled default when None); the first problem raises."""
    path = Path(path) if path is not None else DEFAULT_WORLD
    data, text = _read(path)
    problems, world = check_world(path, data, text)
    if world is None:
        first = problems[0]
        error = WorldError(first.file, first.line, first.message)
        error.problems = problems  # type: ignore[attr-defined]
        raise error
    return world


def is_world_file(path: str | Path) -> bool:
    """True for a TOML file whose first table is [world]: `maillab lint` tells worlds from profiles."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped in ("[world]", "[[domain]]")
    return False
