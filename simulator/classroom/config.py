"""A class folder: `class.toml` (profile, domain, lessons, ports), `students.csv` (id, address,
secret) and one printable handout per student under `handouts/`.

```
CLASS/
  class.toml          what `maillab serve --classroom CLASS` serves
  students.csv        id,address,secret (mode 0600: it holds every secret)
  handouts/s01.txt    one sheet per student: address, secret, server, how to connect
  data/               the server's Maildirs and transcripts (made by the server)
```
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
from typing import Any

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


@dataclass(frozen=True)
class Student:
    id: str
    address: str
    secret: str

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

    @property
    def data_dir(self) -> Path:
        return self.dir / DATA_DIR

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
) -> ClassConfig:
    """Write a new class folder; never touches an existing one (ClassroomError instead)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ClassroomError(f"{directory} already exists: refusing to overwrite a class folder (choose a new folder)")
    if not 1 <= students <= MAX_STUDENTS:
        raise ClassroomError(f"--students must be between 1 and {MAX_STUDENTS}, got {students}")
    prefix = prefix.strip().lower()
    if not _PREFIX.match(prefix):
        raise ClassroomError(f"--prefix {prefix!r}: use a letter, then letters, digits, '.', '_' or '-'")
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
        domain = loaded.local_domains[0] if loaded.local_domains else DEFAULT_DOMAIN
    domain = _check_domain(domain)
    width = max(2, len(str(students)))
    roster = [
        Student(f"{prefix}{number:0{width}d}", f"{prefix}{number:0{width}d}@{domain}", make_secret())
        for number in range(1, students + 1)
    ]
    taken = {a.address for a in loaded.accounts}
    clash = next((s.address for s in roster if s.address in taken), None)
    if clash is not None:
        raise ClassroomError(f"{clash} is already a demo account of profile {loaded.name!r}: choose another --prefix or --domain")
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
    )
    _write_atomically(config)
    return config


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
            writer.writerow(["id", "address", "secret"])
            for student in config.students:
                writer.writerow([student.id, student.address, student.secret])
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
    return f"""# A maillab class folder, written by `maillab classroom init`.
# Serve it with: maillab serve --classroom THIS_FOLDER --host 0.0.0.0

created = {_quote(config.created)}
# persona name (rfc, qq, sina ...) or profile file
profile = {_quote(config.profile)}
# the students' mail domain (local on the server); the accounts are in students.csv
domain = {_quote(config.domain)}
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
# true keeps the persona's demo accounts (alice@example.com ...: their secrets are public)
# keep_demo_accounts = false

# [policies]  # any profile policy for the class (docs/profiles.md, docs/security.md), e.g.
# mailbox_quota = 104857600       # octets per student mailbox (default 100 MiB for a class)
# auth_lockout_failures = 10      # failed logins from one machine before its logins are refused

[ports]
smtp = {config.smtp_port}
pop3 = {config.pop3_port}
"""


# --- load --------------------------------------------------------------------------------------


def load_class(directory: Path) -> ClassConfig:
    """Read a class folder; any problem is one ClassroomError line naming the file."""
    directory = Path(directory)
    path = directory / CLASS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClassroomError(f"{directory} is not a class folder (no {CLASS_FILE}; make one with `maillab classroom init`)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClassroomError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ClassroomError(f"{path}: {error}") from None
    known = {
        "created", "profile", "domain", "prefix", "students", "server_host", "lessons", "lesson",
        "max_connections_per_client", "keep_demo_accounts", "ports", "policies",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ClassroomError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    ports = data.get("ports", {})
    try:
        limit = data.get("max_connections_per_client")
        config = ClassConfig(
            dir=directory,
            profile=str(data.get("profile", "rfc")),
            domain=_check_domain(str(data.get("domain", DEFAULT_DOMAIN))),
            created=str(data.get("created", "")),
            smtp_port=int(ports.get("smtp", 2525)),
            pop3_port=int(ports.get("pop3", 2110)),
            server_host=str(data.get("server_host", "")),
            prefix=str(data.get("prefix", "s")),
            lessons=_lessons_path(directory, data.get("lessons")),
            lesson=str(data["lesson"]) if data.get("lesson") else None,
            max_connections_per_client=int(limit) if limit is not None else None,
            keep_demo_accounts=bool(data.get("keep_demo_accounts", False)),
            policies=_class_policies(path, data.get("policies", {})),
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise ClassroomError(f"{path}: {error}") from None
    config.students = load_students(directory / STUDENTS_FILE)
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


def load_students(path: Path) -> list[Student]:
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
        if address in seen or any(s.id == student_id for s in students):
            raise ClassroomError(f"{path}:{number}: {student_id} / {address} is listed twice")
        seen.add(address)
        students.append(Student(student_id, address, secret))
    if not students:
        raise ClassroomError(f"{path}: no students")
    return students


# --- the server's profile ----------------------------------------------------------------------


def class_profile(config: ClassConfig) -> Profile:
    """The class profile with the students as its accounts (their domain becomes local).

    The persona's demo accounts are dropped (their secrets are printed in the README, so they
    would be a mailbox the whole room shares) unless `keep_demo_accounts = true`, and the
    per-client connection limit defaults to 8 unless the profile or class.toml sets one.
    """
    try:
        profile = load_profile(config.profile)
    except ProfileError as error:
        raise ClassroomError(f"class profile: {error}") from None
    if not config.keep_demo_accounts:
        profile = dataclasses.replace(profile, accounts=(), preloaded_mail=())
    profile = profile.with_accounts(Account(s.address, s.secret, note=f"student {s.id}") for s in config.students)
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


def _class_policies(path: Path, table: Any) -> dict[str, Any]:
    """class.toml's [policies]: any profile policy (docs/profiles.md), checked like a profile's."""
    if not isinstance(table, dict):
        raise ClassroomError(f"{path}: [policies] must be a table")
    from mockservers.schema import BOOL, INT, LIST_STR, NUM, POLICY_TYPES, STR

    python_types: dict[str, tuple[type, ...]] = {STR: (str,), INT: (int,), NUM: (int, float), BOOL: (bool,), LIST_STR: (list,)}
    for key, value in table.items():
        expected = POLICY_TYPES.get(key)
        if expected is None:
            raise ClassroomError(f"{path}: unknown policy {key!r} in [policies] (see docs/profiles.md)")
        if isinstance(expected, tuple):
            if value not in expected:
                raise ClassroomError(f"{path}: policies.{key} must be one of {', '.join(expected)}")
        elif not isinstance(value, python_types[expected]) or (isinstance(value, bool) and expected != BOOL):
            raise ClassroomError(f"{path}: policies.{key} must be a {expected}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in table.items()}


# --- handouts ----------------------------------------------------------------------------------


def handout_text(config: ClassConfig, student: Student) -> str:
    from mockservers import sasl

    host = config.server_host or "SERVER-ADDRESS"
    partner = config.partner(student)
    writer = config.writer_to(student)
    b64_user = sasl.b64encode_text(student.address)
    b64_secret = sasl.b64encode_text(student.secret)
    plain = sasl.plain_payload(student.address, student.secret)
    title = f"maillab classroom - {student.id}"
    return f"""{title}
{"=" * len(title)}

  Your address   {student.address}
  Your secret    {student.secret}        (keep it to yourself)
  Your partner   {partner.address}      (you write to them; {writer.id} writes to you)

  Server         {host}
  SMTP port      {config.smtp_port}
  POP3 port      {config.pop3_port}

Log in only as yourself: the server knows your secret, and the instructor sees every session.


1. With the maillab TUI
-----------------------

  maillab --server {host} --smtp-port {config.smtp_port} --pop3-port {config.pop3_port} --login {student.address}

maillab asks for your secret once. In the lessons, $user is your address and $secret your
secret; when a lesson writes to $to, write to your partner ({partner.address}) or to yourself.


2. With telnet: send a message (SMTP)
-------------------------------------

  telnet {host} {config.smtp_port}
  EHLO my-laptop
  AUTH LOGIN
  334 VXNlcm5hbWU6                 the server asks "Username:" in base64
  {b64_user:<32} your address in base64
  334 UGFzc3dvcmQ6                 "Password:"
  {b64_secret:<32} your secret in base64
  235 ...                          logged in
  MAIL FROM:<{student.address}>
  RCPT TO:<{partner.address}>
  DATA
  Subject: hello from {student.id}
                                   (an empty line between the headers and the body)
  Hello!
  .                                (a dot alone ends the message)
  QUIT

  AUTH PLAIN in one line:   AUTH PLAIN {plain}
  base64 by hand:           printf '%s' '{student.address}' | base64


3. With telnet: fetch your mail (POP3)
--------------------------------------

  telnet {host} {config.pop3_port}
  USER {student.address}
  PASS {student.secret}
  LIST
  RETR 1
  QUIT

(Windows: enable the telnet client, or use `maillab` above; on macOS/Linux `nc -C {host} {config.smtp_port}`
works too.)
"""
