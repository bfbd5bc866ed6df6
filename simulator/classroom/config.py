"""A class folder: `class.toml` (profile, domain, lessons, ports), `students.csv` (id, address,
secret) and one printable handout per student under `handouts/`.

```
CLASS/
  class.toml          what `maillab serve --classroom CLASS` serves
  students.csv        id,address,secret (mode 0600: it holds every secret)
  handouts/s01.txt    one sheet per student: address, secret, server, how to connect
  data/               the server's Maildirs and transcripts (made by the server)
```

A world class (`--world`) runs a lab internet instead of one server: each student has an
address on two of its domains (one secret for both), `students.csv` has a fourth column
`other_address`, and `data/` is laid out like a world's data (`data/<domain>/...`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mockservers.accounts import Account
from mockservers.profile import Profile, load_profile
from mockservers.profile_files import ProfileError

CLASS_FILE = "class.toml"
STUDENTS_FILE = "students.csv"
HANDOUTS_DIR = "handouts"
DATA_DIR = "data"

#: Per client address and protocol, unless the class profile (or class.toml) says otherwise:
#: enough for a TUI plus a few telnet windows, too few for one runaway loop to starve the room.
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 8
#: A class's mailboxes hold at most this much unless the profile or class.toml says otherwise.
DEFAULT_CLASS_MAILBOX_QUOTA = 100 << 20
DEFAULT_DOMAIN = "class.test"
#: A class of 1,000 is measured by tests/benchmarks/classroom_load.py (docs/performance.md).
MAX_STUDENTS = 2000

# No 0/o, 1/l/i: students copy the secret from paper.
_SECRET_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_PREFIX = re.compile(r"^[a-z][a-z0-9._-]{0,30}$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class ClassroomError(Exception):
    """A class folder or option that cannot be used; `str()` is one line for the terminal."""


#: The recipient a world class's handout sends to for a bounce: no class ever has this account.
UNKNOWN_LOCAL_PART = "nobody"


def unknown_recipient_on(domain: str) -> str:
    """The address on `domain` that nobody has: a world class's bounce exercise."""
    return f"{UNKNOWN_LOCAL_PART}@{domain.lower()}"


@dataclass(frozen=True)
class Student:
    id: str
    address: str
    secret: str
    other_address: str = ""  # a world class: the same student on the second domain

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]


@dataclass
class ClassConfig:
    """class.toml plus students.csv, as read from (or written to) a class folder."""

    dir: Path
    profile: str
    domain: str
    created: str
    smtp_port: int = 2525
    pop3_port: int = 2110
    server_host: str = ""
    prefix: str = "s"
    lessons: Path | None = None
    lesson: str | None = None  # default lesson of `classroom watch`
    max_connections_per_client: int | None = None  # None: the profile's, else 8
    keep_demo_accounts: bool = False
    policies: dict[str, Any] = field(default_factory=dict)  # [policies] of class.toml: the class's limits
    students: list[Student] = field(default_factory=list)
    world: str | None = None  # "default" or a world file's absolute path: the class runs a lab internet
    domains: tuple[str, ...] = ()  # a world class: the students' two domains (the first is `domain`)

    @property
    def data_dir(self) -> Path:
        return self.dir / DATA_DIR

    @property
    def is_world(self) -> bool:
        return self.world is not None

    @property
    def other_domain(self) -> str:
        """A world class's second domain ("" for a one-server class)."""
        return self.domains[1] if len(self.domains) > 1 else ""

    @property
    def unknown_recipient(self) -> str:
        """Where a world class's students send to see a bounce: no account on the second domain."""
        return unknown_recipient_on(self.other_domain) if self.other_domain else ""

    def partner_address(self, student: Student) -> str:
        """The address `student` writes to: the partner's, on the other domain in a world class."""
        partner = self.partner(student)
        return partner.other_address or partner.address

    def student(self, student_id: str) -> Student:
        for student in self.students:
            if student.id == student_id:
                return student
        raise KeyError(student_id)

    def partner(self, student: Student) -> Student:
        """Who `student` writes to: the next student on the list (the last writes to the first)."""
        index = self.students.index(student)
        return self.students[(index + 1) % len(self.students)]

    def writer_to(self, student: Student) -> Student:
        index = self.students.index(student)
        return self.students[index - 1]


# --- init --------------------------------------------------------------------------------------


def make_secret() -> str:
    """12 random characters in three groups (about 59 bits), easy to copy from paper."""
    return "-".join("".join(secrets.choice(_SECRET_ALPHABET) for _ in range(4)) for _ in range(3))


def guess_server_host() -> str:
    """This machine's LAN address (no packet is sent), for the handouts; 127.0.0.1 without one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 9))
            address = probe.getsockname()[0]
            if address and not address.startswith("0."):
                return address
    except OSError:
        pass
    return "127.0.0.1"


def _check_domain(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    if not domain or len(domain) > 200 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise ClassroomError(f"--domain {domain!r} is not a mail domain (like class.test)")
    return domain


def init_class(
    directory: Path,
    *,
    students: int,
    prefix: str = "s",
    profile: str = "rfc",
    lessons: Path | None = None,
    domain: str | None = None,
    server_host: str | None = None,
    smtp_port: int = 2525,
    pop3_port: int = 2110,
    world: str | Path | None = None,
) -> ClassConfig:
    """Write a new class folder; never touches an existing one (ClassroomError instead).

    `world` ("" or "default" for the bundled one, else a world file) makes a world class: each
    student gets an address on two of its domains (`domain` "A,B"; default its first two).
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ClassroomError(f"{directory} already exists: refusing to overwrite a class folder (choose a new folder)")
    if not 1 <= students <= MAX_STUDENTS:
        raise ClassroomError(f"--students must be between 1 and {MAX_STUDENTS}, got {students}")
    prefix = prefix.strip().lower()
    if not _PREFIX.match(prefix):
        raise ClassroomError(f"--prefix {prefix!r}: use a letter, then letters, digits, '.', '_' or '-'")
    world_value = world_domains = None
    if world is not None:
        if profile != "rfc":
            raise ClassroomError("--profile cannot be used with --world (each domain's persona is in the world file)")
        world_value = "default" if str(world) in ("", "default") else str(Path(world).resolve())
        loaded_world = _load_world(world_value)
        world_domains = _world_domains(loaded_world, domain, "--domain")
        domain = world_domains[0]
        loaded = None
        profile_value = ""
    else:
        try:
            loaded = load_profile(profile)
            profile_value = profile
            if profile.endswith(".toml") or "/" in profile or "\\" in profile:
                profile_value = str(Path(profile).resolve())  # the class must not depend on the cwd
        except ProfileError as error:
            raise ClassroomError(f"--profile: {error}") from None
    if lessons is not None:
        if not Path(lessons).is_dir():
            raise ClassroomError(f"--lessons {lessons}: no such folder")
        lessons = Path(lessons).resolve()
    if domain is None:
        domain = loaded.local_domains[0] if loaded is not None and loaded.local_domains else DEFAULT_DOMAIN
    domain = _check_domain(domain)
    other = world_domains[1] if world_domains else None
    width = max(2, len(str(students)))
    roster = [
        Student(
            f"{prefix}{number:0{width}d}", f"{prefix}{number:0{width}d}@{domain}", make_secret(),
            f"{prefix}{number:0{width}d}@{other}" if other else "",
        )
        for number in range(1, students + 1)
    ]
    if world_value is not None:
        taken = {a.address for d in loaded_world.domains for a in d.accounts}
        owner = f"world {loaded_world.name!r}"
    else:
        taken = {a.address for a in loaded.accounts}
        owner = f"profile {loaded.name!r}"
    clash = next((a for s in roster for a in (s.address, s.other_address) if a in taken), None)
    if clash is not None:
        raise ClassroomError(f"{clash} is already a demo account of {owner}: choose another --prefix or --domain")
    if prefix == UNKNOWN_LOCAL_PART or any(s.local_part == UNKNOWN_LOCAL_PART for s in roster):
        raise ClassroomError(f"--prefix {prefix!r}: {UNKNOWN_LOCAL_PART} is the unknown recipient of the handouts")
    config = ClassConfig(
        dir=directory,
        profile=profile_value,
        domain=domain,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        smtp_port=smtp_port,
        pop3_port=pop3_port,
        server_host=server_host or guess_server_host(),
        prefix=prefix,
        lessons=lessons,
        students=roster,
        world=world_value,
        domains=tuple(world_domains or ()),
    )
    _write_atomically(config)
    return config


def _load_world(value: str) -> Any:  # -> World
    """A class's world: the bundled one for "default"; its errors are `file:line: what is wrong`."""
    from mockservers.world.worldfile import WorldError, load_world

    try:
        return load_world(None if value == "default" else value)
    except WorldError as error:
        raise ClassroomError(str(error)) from None


def _world_domains(world: Any, chosen: str | list[str] | None, where: str) -> tuple[str, str]:
    """The two domains of a world class: `chosen` ("A,B" or [A, B]) or the world's first two."""
    names = [d.name for d in world.domains]
    if chosen is None or chosen == "":
        if len(names) < 2:
            raise ClassroomError(f"{world.source}: world {world.name!r} has one domain; a world class needs two")
        return names[0], names[1]
    wanted = [n.strip().lower().rstrip(".") for n in (chosen.split(",") if isinstance(chosen, str) else chosen)]
    if len(wanted) != 2 or wanted[0] == wanted[1]:
        raise ClassroomError(f"{where} must name two different domains of the world, like {names[0]},{names[-1]}")
    for name in wanted:
        if name not in names:
            raise ClassroomError(f"{where}: {name!r} is not a domain of world {world.name!r} ({', '.join(names)})")
    return wanted[0], wanted[1]


def _write_atomically(config: ClassConfig) -> None:
    """Build the folder beside its final place, then rename it in: all or nothing."""
    target = config.dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(staging, 0o700)
        (staging / CLASS_FILE).write_text(class_toml(config), encoding="utf-8")
        students_path = staging / STUDENTS_FILE
        fd = os.open(students_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "address", "secret"] + (["other_address"] if config.is_world else []))
            for student in config.students:
                other = [student.other_address] if config.is_world else []
                writer.writerow([student.id, student.address, student.secret, *other])
        handouts = staging / HANDOUTS_DIR
        handouts.mkdir()
        for student in config.students:
            (handouts / f"{student.id}.txt").write_text(handout_text(config, student), encoding="utf-8")
        if target.exists():
            target.rmdir()  # empty (checked above); rename cannot replace a directory
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def class_toml(config: ClassConfig) -> str:
    lessons = (
        f"lessons = {_quote(str(config.lessons))}"
        if config.lessons
        else '# lessons = "/path/to/lesson-pack"'
    )
    if config.is_world:
        serves = f"""# the lab internet the class runs: "default" (the bundled world) or a world file (docs/world.md)
world = {_quote(config.world or "default")}
# the students' two domains: an address on each, one secret for both (students.csv)
domains = [{", ".join(_quote(d) for d in config.domains)}]"""
        ports = "# [ports]: each domain's ports, the relay port and the DNS port are in the world file\n"
        demo = "# true keeps the world's demo accounts (alice@qq.lab ...: their secrets are public)"
    else:
        serves = f"""# persona name (rfc, qq, sina ...) or profile file
profile = {_quote(config.profile)}
# the students' mail domain (local on the server); the accounts are in students.csv
domain = {_quote(config.domain)}"""
        ports = f"[ports]\nsmtp = {config.smtp_port}\npop3 = {config.pop3_port}\n"
        demo = "# true keeps the persona's demo accounts (alice@example.com ...: their secrets are public)"
    return f"""# A maillab class folder, written by `maillab classroom init`.
# Serve it with: maillab serve --classroom THIS_FOLDER --host 0.0.0.0

created = {_quote(config.created)}
{serves}
prefix = {_quote(config.prefix)}
students = {len(config.students)}
# the server's address, as printed on the handouts
server_host = {_quote(config.server_host)}
# a lesson folder for the class (besides the bundled lessons)
{lessons}
# the lesson `maillab classroom watch` follows when no --lesson is given
# lesson = "smtp-send-mail"
# connections per student machine and protocol (default: the profile's limit, else 8)
# max_connections_per_client = 8
{demo}
# keep_demo_accounts = false

# [policies]  # any profile policy for the class (docs/profiles.md, docs/security.md), e.g.
# mailbox_quota = 104857600       # octets per student mailbox (default 100 MiB for a class)
# auth_lockout_failures = 10      # failed logins from one machine before its logins are refused

{ports}"""


# --- load --------------------------------------------------------------------------------------

_CLASS_KEYS = {
    "created", "profile", "domain", "prefix", "students", "server_host", "lessons", "lesson",
    "max_connections_per_client", "keep_demo_accounts", "ports", "policies", "world", "domains",
}


def load_class(directory: Path) -> ClassConfig:
    """Read a class folder; any problem is one ClassroomError line, `file:line: what is wrong`."""
    from mockservers.profile_files import locate, toml_error_position

    directory = Path(directory)
    path = directory / CLASS_FILE
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ClassroomError(f"{directory} is not a class folder (no {CLASS_FILE}; make one with `maillab classroom init`)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClassroomError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        line, message = toml_error_position(error)
        raise ClassroomError(f"{path}:{line}: {message}" if line else f"{path}: {message}") from None

    def at(*key: Any) -> str:
        line = locate(text, key)
        return f"{path}:{line}" if line else str(path)

    unknown = sorted(set(data) - _CLASS_KEYS)
    if unknown:
        raise ClassroomError(f"{at(unknown[0])}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_CLASS_KEYS))})")
    ports = data.get("ports", {})
    if not isinstance(ports, dict):
        raise ClassroomError(f"{at('ports')}: [ports] must be a table")
    values: dict[str, Any] = {}
    for key, convert in (
        ("profile", str), ("created", str), ("server_host", str), ("prefix", str), ("lesson", str),
        ("max_connections_per_client", int), ("keep_demo_accounts", bool), ("world", str),
    ):
        if key in data:
            value = data[key]
            if convert is not str and (not isinstance(value, convert) or (convert is int and isinstance(value, bool))):
                raise ClassroomError(f"{at(key)}: {key} must be {'a whole number' if convert is int else 'true or false'}")
            values[key] = convert(value)
    for key in ("smtp", "pop3"):
        if key in ports and (not isinstance(ports[key], int) or isinstance(ports[key], bool) or not 0 <= ports[key] <= 65535):
            raise ClassroomError(f"{at('ports', key)}: ports.{key} must be a port number (0-65535)")
    try:
        domain = _check_domain(str(data.get("domain", DEFAULT_DOMAIN)))
    except ClassroomError as error:
        raise ClassroomError(f"{at('domain')}: {error}".replace("--domain ", "domain ")) from None
    world = values.get("world")
    domains: tuple[str, ...] = ()
    if world is not None:
        if "profile" in data or "domain" in data:
            key = "profile" if "profile" in data else "domain"
            raise ClassroomError(f"{at(key)}: a world class has no {key} (its domains and personas are in the world file)")
        if world != "default" and not Path(world).is_absolute():
            world = str((directory / world).resolve())
        loaded = _load_world(world)
        chosen = data.get("domains")
        if chosen is not None and (not isinstance(chosen, list) or not all(isinstance(d, str) for d in chosen)):
            raise ClassroomError(f"{at('domains')}: domains must be a list of two domain names")
        try:
            domains = _world_domains(loaded, chosen, "domains")
        except ClassroomError as error:
            raise ClassroomError(f"{at('domains')}: {error}") from None
        domain = domains[0]
    elif "domains" in data:
        raise ClassroomError(f"{at('domains')}: domains needs world = \"default\" or a world file")
    config = ClassConfig(
        dir=directory,
        profile=values.get("profile", "rfc"),
        domain=domain,
        created=values.get("created", ""),
        smtp_port=int(ports.get("smtp", 2525)),
        pop3_port=int(ports.get("pop3", 2110)),
        server_host=values.get("server_host", ""),
        prefix=values.get("prefix", "s"),
        lessons=_lessons_path(directory, data.get("lessons")),
        lesson=values.get("lesson") or None,
        max_connections_per_client=values.get("max_connections_per_client"),
        keep_demo_accounts=values.get("keep_demo_accounts", False),
        policies=_class_policies(path, data.get("policies", {}), at),
        world=world,
        domains=domains,
    )
    config.students = load_students(directory / STUDENTS_FILE, domains)
    return config


def load_lesson(config: ClassConfig, lesson_id: str | None):  # -> Lesson | None
    """The lesson by id from the bundled curriculum and the class's lesson pack."""
    if not lesson_id:
        return None
    from simulator.course.catalog import load_index

    dirs: list[Path] = [config.lessons] if config.lessons else []
    index = load_index(dirs)
    lesson = index.load(lesson_id, "en")
    if lesson is None:
        where = "the bundled lessons" + (f" and {config.lessons}" if config.lessons else "")
        problems = [str(e) for e in index.errors if lesson_id in str(e)]
        detail = f" ({problems[0]})" if problems else ""
        raise ClassroomError(f"no lesson {lesson_id!r} in {where}{detail}")
    return lesson


def _lessons_path(directory: Path, value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else (directory / path)


def load_students(path: Path, domains: tuple[str, ...] = ()) -> list[Student]:
    """students.csv; a world class's rows also have `other_address`, on its second domain."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ClassroomError(f"{path}: missing (the class folder has no students)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ClassroomError(f"{path}: cannot read: {error}") from None
    students: list[Student] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=2):
        student_id = (row.get("id") or "").strip()
        address = (row.get("address") or "").strip().lower()
        secret = (row.get("secret") or "").strip()
        if not student_id or address.count("@") != 1 or not secret:
            raise ClassroomError(f"{path}:{number}: a student needs id, address and secret")
        other = (row.get("other_address") or "").strip().lower()
        if domains and (address.rpartition("@")[2] != domains[0] or other.rpartition("@")[2] != domains[1]):
            raise ClassroomError(f"{path}:{number}: {student_id} needs an address on {domains[0]} and an other_address on {domains[1]}")
        if address in seen or other in seen or any(s.id == student_id for s in students):
            raise ClassroomError(f"{path}:{number}: {student_id} / {address} is listed twice")
        seen.update(a for a in (address, other) if a)
        students.append(Student(student_id, address, secret, other if domains else ""))
    if not students:
        raise ClassroomError(f"{path}: no students")
    return students


# --- the server's profile ----------------------------------------------------------------------


def class_profile(config: ClassConfig) -> Profile:
    """The class profile with the students as its accounts (their domain becomes local).

    The persona's demo accounts are dropped (their secrets are printed in the README, so they
    would be a mailbox the whole room shares) unless `keep_demo_accounts = true`, and the
    class's limits apply (`class_limits`). A world class: its first domain's submission profile.
    """
    if config.is_world:
        from mockservers.world.roles import submission_profile

        world = class_world(config)
        return class_limits(config, submission_profile(world, world.domain(config.domain)))
    try:
        profile = load_profile(config.profile)
    except ProfileError as error:
        raise ClassroomError(f"class profile: {error}") from None
    if not config.keep_demo_accounts:
        profile = dataclasses.replace(profile, accounts=(), preloaded_mail=())
    profile = profile.with_accounts(Account(s.address, s.secret, note=f"student {s.id}") for s in config.students)
    return class_limits(config, profile)


def class_world(config: ClassConfig) -> Any:  # -> World
    """A world class's world: the students' accounts on their two domains, and the world's demo
    accounts dropped unless `keep_demo_accounts = true` (the same reason as for a profile's)."""
    world = _load_world(config.world or "default")
    homes = {config.domains[0]: lambda s: s.address, config.domains[1]: lambda s: s.other_address}
    domains = []
    for domain in world.domains:
        accounts = list(domain.accounts) if config.keep_demo_accounts else []
        if domain.name in homes:
            address_of = homes[domain.name]
            accounts += [Account(address_of(s), s.secret, note=f"student {s.id}") for s in config.students]
        domains.append(dataclasses.replace(domain, accounts=tuple(accounts)))
    return dataclasses.replace(world, domains=tuple(domains))


def class_limits(config: ClassConfig, profile: Profile) -> Profile:
    """The class's limits on a profile (the one server, or each submission server of a world):
    8 connections per client unless the profile or class.toml sets a limit, a 100 MiB mailbox
    quota unless the profile sets one, POP3 never telling which names exist, then class.toml's
    [policies]."""
    limit = config.max_connections_per_client
    if limit is None and "max_connections_per_client" not in profile.raw.get("policies", {}):
        limit = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    changes: dict[str, Any] = {}
    if limit is not None:
        changes["max_connections_per_client"] = limit
    if "mailbox_quota" not in profile.raw.get("policies", {}):
        changes["mailbox_quota"] = DEFAULT_CLASS_MAILBOX_QUOTA
    changes["hide_unknown_users"] = True  # a class's POP3 never tells which student names exist
    changes.update(config.policies)  # class.toml's [policies] have the last word
    return dataclasses.replace(profile, policies=dataclasses.replace(profile.policies, **changes))


def _class_policies(path: Path, table: Any, at: Callable[..., str] | None = None) -> dict[str, Any]:
    """class.toml's [policies]: any profile policy (docs/profiles.md), checked like a profile's.

    `at(*key)` names the line (`file:line`)."""
    if at is None:
        at = lambda *key: str(path)  # noqa: E731
    if not isinstance(table, dict):
        raise ClassroomError(f"{at('policies')}: [policies] must be a table")
    from mockservers.schema import BOOL, INT, LIST_STR, NUM, POLICY_TYPES, STR

    python_types: dict[str, tuple[type, ...]] = {STR: (str,), INT: (int,), NUM: (int, float), BOOL: (bool,), LIST_STR: (list,)}
    for key, value in table.items():
        expected = POLICY_TYPES.get(key)
        if expected is None:
            raise ClassroomError(f"{at('policies', key)}: unknown policy {key!r} in [policies] (see docs/profiles.md)")
        if isinstance(expected, tuple):
            if value not in expected:
                raise ClassroomError(f"{at('policies', key)}: policies.{key} must be one of {', '.join(expected)}")
        elif not isinstance(value, python_types[expected]) or (isinstance(value, bool) and expected != BOOL):
            raise ClassroomError(f"{at('policies', key)}: policies.{key} must be a {expected}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in table.items()}


# --- handouts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    """One of a student's addresses and the ports that reach it (what a handout prints)."""

    address: str
    smtp_port: int | None
    pop3_port: int | None
    smtps_port: int | None = None
    pop3s_port: int | None = None
    domain: str = ""
    persona: str = ""


def student_mailboxes(config: ClassConfig, student: Student) -> list[Mailbox]:
    """Where a student's mail lives: one mailbox on the class server, or one per world domain."""
    if not config.is_world:
        return [Mailbox(student.address, config.smtp_port, config.pop3_port, domain=config.domain)]
    world = _load_world(config.world or "default")
    boxes = []
    for address in (student.address, student.other_address):
        domain = world.domain(address.rpartition("@")[2])
        boxes.append(
            Mailbox(address, domain.submission_port, domain.pop3_port, domain.smtps_port, domain.pop3s_port, domain.name, domain.persona)
        )
    return boxes


def _port(port: int | None) -> str:
    """A port as the handout prints it: 0 is picked at start (the server prints it), None is off."""
    return "-" if port is None else ("(see the server)" if port == 0 else str(port))


def handout_text(config: ClassConfig, student: Student) -> str:
    """One printable sheet: who the student is, where the server is, a TUI line, a telnet SMTP
    session and a POP3 session to copy. A world class's sheet names both addresses, each domain's
    ports and the DNS port, and adds the relay and bounce exercise."""
    host = config.server_host or "SERVER-ADDRESS"
    boxes = student_mailboxes(config, student)
    home = boxes[0]
    writer = config.writer_to(student)
    to = config.partner_address(student)
    title = f"maillab classroom - {student.id}"
    if not config.is_world:
        identity = f"""  Your address   {student.address}
  Your secret    {student.secret}        (keep it to yourself)
  Your partner   {to}      (you write to them; {writer.id} writes to you)

  Server         {host}
  SMTP port      {config.smtp_port}
  POP3 port      {config.pop3_port}"""
        tui_intro = f"""maillab asks for your secret once. In the lessons, $user is your address and $secret your
secret; when a lesson writes to $to, write to your partner ({to}) or to yourself."""
        send_title = "2. With telnet: send a message (SMTP)"
        send_after = ""
        fetch_title = "3. With telnet: fetch your mail (POP3)"
        fetch = _telnet_pop3(host, home, student.secret)
    else:
        away = boxes[1]
        rows = "\n".join(
            f"  {b.domain:<14} {_port(b.smtp_port):<12} {_port(b.smtps_port):<12} {_port(b.pop3_port):<12} {_port(b.pop3s_port)}"
            for b in boxes
        )
        dns_port = _port(_load_world(config.world or "default").dns_port)
        identity = f"""  Your addresses {home.address:<24} (on {home.domain}, a {home.persona} server)
                 {away.address:<24} (on {away.domain}, a {away.persona} server)
  Your secret    {student.secret}        (the same for both; keep it to yourself)
  Your partner   {to}      (you write to them from {home.address}; {writer.id} writes to {away.address})

  Server         {host}
                 SMTP (587)   SMTPS (465)  POP3 (110)   POP3S (995)
{rows}
  DNS port       {dns_port}               (dig @{host} -p {dns_port} MX {away.domain})

This lab is a small internet: {home.domain} and {away.domain} are two mail providers. Mail you
send on {home.domain} for {away.domain} is queued, then {home.domain}'s server looks up the MX of
{away.domain} in the lab's DNS and delivers it over SMTP: your partner finds it with two
Received: lines, one per server."""
        tui_intro = f"""maillab asks for your secret once. Start the first line to work on {home.domain}, the second
on {away.domain}. In the lessons, $user is the address you logged in with (--login), $other_user
your address on the other domain (--other-login), $secret your secret; $to is your partner ({to})."""
        send_title = f"2. With telnet: send from {home.domain} to your partner on {away.domain} (SMTP)"
        send_after = f"""
  Then send one more message, to {config.unknown_recipient} (nobody has that address): a few
  seconds later a bounce ("Undelivered Mail Returned to Sender", a multipart/report) is in your
  {home.domain} mailbox.
"""
        fetch_title = "3. With telnet: fetch your mail on both domains (POP3)"
        fetch = (
            f"  On {home.domain} (the bounce):\n\n"
            + _telnet_pop3(host, home, student.secret)
            + f"\n  On {away.domain} (what your classmate sent you, with its two Received: lines):\n\n"
            + _telnet_pop3(host, away, student.secret)
        )
    others = {b.address: next((o.address for o in boxes if o is not b), "") for b in boxes}
    tui = "\n".join(
        f"  maillab --server {host} --smtp-port {b.smtp_port} --pop3-port {b.pop3_port} --login {b.address}"
        + (f" --other-login {others[b.address]}" if others[b.address] else "")
        for b in boxes
    )
    return f"""{title}
{"=" * len(title)}

{identity}

Log in only as yourself: the server knows your secret, and the instructor sees every session.


1. With the maillab TUI
-----------------------

{tui}

{tui_intro}


{send_title}
{"-" * len(send_title)}

{_telnet_smtp(host, home, student, to)}{send_after}

{fetch_title}
{"-" * len(fetch_title)}

{fetch}
(Windows: enable the telnet client, or use `maillab` above; on macOS/Linux `nc -C {host} {home.smtp_port}`
works too.)
"""


def _telnet_smtp(host: str, box: Mailbox, student: Student, to: str) -> str:
    """An SMTP session to copy: AUTH LOGIN with the base64 lines, one message to `to`."""
    from mailprotocol import codec as sasl

    b64_user = sasl.b64encode_text(box.address)
    b64_secret = sasl.b64encode_text(student.secret)
    plain = sasl.plain_payload(box.address, student.secret)
    return f"""  telnet {host} {box.smtp_port}
  EHLO my-laptop
  AUTH LOGIN
  334 VXNlcm5hbWU6                 the server asks "Username:" in base64
  {b64_user:<32} your address in base64
  334 UGFzc3dvcmQ6                 "Password:"
  {b64_secret:<32} your secret in base64
  235 ...                          logged in
  MAIL FROM:<{box.address}>
  RCPT TO:<{to}>
  DATA
  Subject: hello from {student.id}
                                   (an empty line between the headers and the body)
  Hello!
  .                                (a dot alone ends the message)
  QUIT

  AUTH PLAIN in one line:   AUTH PLAIN {plain}
  base64 by hand:           printf '%s' '{box.address}' | base64
"""


def _telnet_pop3(host: str, box: Mailbox, secret: str) -> str:
    return f"""  telnet {host} {box.pop3_port}
  USER {box.address}
  PASS {secret}
  LIST
  RETR 1
  QUIT
"""
