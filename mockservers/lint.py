"""`maillab lint PROFILE.toml`: every problem of a profile as `file:line: what is wrong`.

Checks each file of the `extends` chain against the schema (unknown keys, wrong types, unknown
choices), every reply (known key, a code that fits the command it answers per RFC 5321 4.3.2, an
enhanced status code whose class matches the first digit, known placeholders), capabilities,
accounts, preloaded mail and fault rules. A profile with an error never starts a server.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from . import schema
from mailprotocol.faults import SMTP_COMMANDS, POP3_COMMANDS, FaultError, rule_from_table
from .profile_files import ProfileError, ProfileSources, locate, load_sources, resolve_profile_path

#: Placeholders a reply text may use.
PLACEHOLDERS = frozenset(
    """host pop3_host implementation max_size address user id queue_id number size count uid challenge
    mechanism reason option parameter verb node domain topic syntax commands timestamp client client_ip
    remaining argument seconds session date epoch""".split()
)

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@dataclass(frozen=True)
class Problem:
    """One finding; errors stop a server from starting, warnings do not."""

    file: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        prefix = "" if self.severity == "error" else "warning: "
        return f"{where}: {prefix}{self.message}"


def lint_profile(name_or_path: str | Path) -> list[Problem]:
    """All problems of a profile file (or bundled persona)."""
    try:
        sources = load_sources(resolve_profile_path(str(name_or_path)))
    except ProfileError as error:
        return [Problem(error.source, error.line, error.message)]
    return check_sources(sources)


def check_sources(sources: ProfileSources) -> list[Problem]:
    problems: list[Problem] = []
    for file, data, _ in sources.chain:
        problems += _check_shape(sources, file, data, schema.SCHEMA, ())
    if any(p.severity == "error" for p in problems):
        return problems  # the rest assumes the right types
    problems += _check_merged(sources)
    return problems


# --- shape ---------------------------------------------------------------------------------------


def _type_ok(expected: Any, value: Any) -> bool:
    if isinstance(expected, tuple):
        return isinstance(value, str) and value in expected
    if expected == schema.STR:
        return isinstance(value, str)
    if expected == schema.INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == schema.NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == schema.BOOL:
        return isinstance(value, bool)
    if expected == schema.LIST_STR:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if expected == schema.REPLY:
        return isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
    if expected == schema.CAPS:
        return isinstance(value, list) and all(
            isinstance(v, str) or (isinstance(v, Mapping) and isinstance(v.get("text"), str) and set(v) <= {"text", "when"}
                                   and v.get("when", "always") in ("always", "plain", "tls"))
            for v in value
        )
    return False


def _describe(expected: Any) -> str:
    if isinstance(expected, tuple):
        return "one of " + ", ".join(f'"{c}"' for c in expected)
    return f"a {expected}" if not expected.startswith("list") else f"a {expected}"


def _check_shape(
    sources: ProfileSources, file: Path, data: Any, shape: Any, path: tuple[Any, ...]
) -> list[Problem]:
    text = next(t for f, _, t in sources.chain if f == file)
    def problem(where: tuple[Any, ...], message: str) -> Problem:
        return Problem(str(file), locate(text, where), message)

    found: list[Problem] = []
    if isinstance(shape, dict):
        if not isinstance(data, Mapping):
            return [problem(path, f"{'.'.join(map(str, path))} must be a table")]
        for key, value in data.items():
            sub = shape.get(key, shape.get("*"))
            if sub is None:
                known = ", ".join(k for k in shape if k != "*")
                where = ".".join(map(str, path + (key,)))
                found.append(problem(path + (key,), f"unknown key {where!r} (known here: {known})"))
                continue
            found += _check_shape(sources, file, value, sub, path + (key,))
        return found
    if isinstance(shape, list):
        if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
            return [problem(path, f"{path[-1]} must be an array of tables ([[{path[-1]}]])")]
        for index, item in enumerate(data):
            found += _check_shape(sources, file, item, shape[0], path + (index,))
        return found
    if not _type_ok(shape, data):
        name = ".".join(str(p) for p in path if not isinstance(p, int))
        return [problem(path, f"{name} must be {_describe(shape)}, got {data!r}")]
    return found


# --- meaning -------------------------------------------------------------------------------------


def _check_merged(sources: ProfileSources) -> list[Problem]:
    raw = sources.merged()
    found: list[Problem] = []

    def problem(where: tuple[Any, ...], message: str, severity: str = "error") -> None:
        file, line = sources.where(where)
        found.append(Problem(str(file), line, message, severity))

    smtp = raw.get("smtp", {})
    replies = smtp.get("replies", {})
    for key, value in replies.items():
        where = ("smtp", "replies", key)
        command = schema.SMTP_REPLY_COMMAND.get(key)
        if command is None:
            problem(where, f"unknown SMTP reply key {key!r}")
            continue
        for message in _smtp_reply_problems(value, command):
            problem(where, f"reply {key!r}: {message}")
    missing = sorted(set(schema.SMTP_REPLY_COMMAND) - set(replies))
    if missing:
        problem(("smtp", "replies"), f"SMTP replies missing: {', '.join(missing)} (extend \"rfc\" to inherit them)")
    for key in smtp.get("close_after", ()):
        if key not in schema.SMTP_REPLY_COMMAND:
            problem(("smtp", "close_after"), f"close_after names unknown SMTP reply key {key!r}")

    pop3 = raw.get("pop3", {})
    pop3_replies = dict(pop3.get("replies", {}))
    for key, value in pop3_replies.items():
        where = ("pop3", "replies", key)
        if key not in schema.POP3_REPLY_KEYS:
            problem(where, f"unknown POP3 reply key {key!r}")
            continue
        for line in _lines(value):
            if not (line.startswith(("+OK", "-ERR")) or (key.endswith(("prompt", "challenge")) and line.startswith("+ "))):
                problem(where, f"POP3 reply {key!r} line {line!r} must start with +OK or -ERR")
            for name in _placeholders(line):
                if name not in PLACEHOLDERS:
                    problem(where, f"reply {key!r} uses unknown placeholder {{{name}}}")
    missing = sorted(schema.POP3_REPLY_KEYS - set(pop3_replies) - {"greeting"})
    if missing:
        problem(("pop3", "replies"), f"POP3 replies missing: {', '.join(missing)} (extend \"rfc\" to inherit them)")
    greeting = pop3.get("greeting", "+OK")
    if not greeting.startswith("+OK"):
        problem(("pop3", "greeting"), f"POP3 greeting {greeting!r} must start with +OK")
    for key in pop3.get("close_after", ()):
        if key not in schema.POP3_REPLY_KEYS:
            problem(("pop3", "close_after"), f"close_after names unknown POP3 reply key {key!r}")

    for section in ("smtp", "pop3"):
        for index, capability in enumerate(raw.get(section, {}).get("capabilities", ())):
            text = capability if isinstance(capability, str) else capability["text"]
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*(?:[ =].*)?", text):
                problem((section, "capabilities"), f"capability #{index + 1} {text!r} must start with a keyword")

    seen: set[str] = set()
    for index, account in enumerate(raw.get("accounts", ())):
        where = ("accounts", index)
        for required in ("address", "secret"):
            if required not in account:
                problem(where, f"account #{index + 1} has no {required}")
        address = str(account.get("address", "")).lower()
        if address and not re.fullmatch(r"[^@\s/\\]+@[A-Za-z0-9.\-]+\.?[A-Za-z0-9\-]*", address):
            problem(where + ("address",), f"account #{index + 1}: {address!r} is not a mail address")
        if address in seen:
            problem(where + ("address",), f"account {address!r} is listed twice")
        seen.add(address)

    addresses = {str(a.get("address", "")).lower() for a in raw.get("accounts", ())}
    for index, entry in enumerate(raw.get("mail", ())):
        where = ("mail", index)
        if "to" not in entry:
            problem(where, f"mail #{index + 1} has no `to`")
        elif str(entry["to"]).lower() not in addresses:
            problem(where + ("to",), f"mail #{index + 1} is for {entry['to']!r}, which is not an account")
        if ("file" in entry) == ("content" in entry):
            problem(where, f"mail #{index + 1} needs exactly one of `file` or `content`")
        elif "file" in entry:
            file, _ = sources.where(where)
            if not (file.parent / entry["file"]).is_file():
                problem(where + ("file",), f"mail #{index + 1}: no such file {entry['file']!r}")

    quirks = raw.get("quirks", {})
    for name, known in (("smtp_unimplemented", SMTP_COMMANDS), ("pop3_unimplemented", POP3_COMMANDS)):
        for command in quirks.get(name, ()):
            if command.upper() not in known:
                problem(("quirks", name), f"{name} names unknown command {command!r}")

    for index, table in enumerate(raw.get("faults", ())):
        where = ("faults", index)
        try:
            rule = rule_from_table(table, index)
        except FaultError as error:
            problem(where, f"fault #{index + 1}: {error}")
            continue
        if rule.protocol == "smtp" and rule.reply:
            for message in _smtp_reply_problems(list(rule.reply), rule.command if rule.command != "*" else "*"):
                problem(where + ("reply",), f"fault #{index + 1}: {message}")
            if rule.reply[0][:1] == "3":
                problem(where + ("reply",), f"fault #{index + 1}: a 3xx reply would leave client and server out of step")

    policies = raw.get("policies", {})
    if policies.get("login_delay") and not any(
        (c if isinstance(c, str) else c["text"]).upper().startswith("LOGIN-DELAY") for c in pop3.get("capabilities", ())
    ):
        problem(("policies", "login_delay"), "login_delay is set but CAPA does not advertise LOGIN-DELAY", "warning")
    return found


def _lines(value: Any) -> list[str]:
    return value.split("\n") if isinstance(value, str) else list(value)


def _placeholders(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name]
    except ValueError:
        return ["<unbalanced braces>"]


def _smtp_reply_problems(value: Any, command: str) -> Iterator[str]:
    lines = _lines(value)
    codes = set()
    for line in lines:
        match = re.match(r"^([2-5]\d\d)([ -]?)(.*)$", line)
        if not match or (line[3:4] not in ("", " ", "-")):
            yield f"line {line!r} must start with a 3-digit code from 200 to 599"
            continue
        code = int(match.group(1))
        codes.add(code)
        enhanced = _ENHANCED.match(match.group(3))
        if enhanced and enhanced.group(1) != match.group(1)[0]:
            yield (
                f"enhanced status code {enhanced.group(0).strip()} has class {enhanced.group(1)} "
                f"but the reply code is {code} (RFC 3463: the class must equal the first digit)"
            )
        for name in _placeholders(line):
            if name not in PLACEHOLDERS:
                yield f"unknown placeholder {{{name}}}"
    if len(codes) > 1:
        yield f"all lines of a multi-line reply must carry the same code, found {sorted(codes)}"
    for code in codes:
        if not schema.smtp_code_fits(command, code):
            yield f"code {code} does not fit {command} (RFC 5321 4.3.2 allows {', '.join(map(str, sorted(schema.ALLOWED_CODES[command])))})"
