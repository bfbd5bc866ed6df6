"""Fault scripts: deterministic, targeted misbehaviour an instructor writes as data.

A rule matches a command (optionally its argument by pattern, the authenticated account and the
client address) and an occurrence (the n-th, every n-th, after n, from t seconds, or with a
seeded probability), and then replies with a given text, waits, or drops the connection.
Counting is per session by default, so every learner who starts over meets the same faults in
the same places; `scope = "server"` counts across all sessions of the server.

Pure Python (no Twisted): the linter and the validator read the same rules, and the server and
the validator count them with the same `FaultTracker`.
"""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import pop3, smtp

#: Pseudo-commands: the greeting and the end of message data ("." or BDAT ... LAST).
CONNECT = "CONNECT"
DATA_END = "DATA-END"

#: Commands a fault rule may name: the protocol core's verb tables.
SMTP_COMMANDS = smtp.VERB_NAMES
POP3_COMMANDS = pop3.VERB_NAMES
#: Verbs whose success starts TLS, and those whose success logs someone in (the verb tables).
TLS_VERBS = frozenset(verb.name for verb in (*smtp.VERBS, *pop3.VERBS) if verb.starts_tls)
LOGIN_VERBS = pop3.LOGIN_VERBS | {verb.name for verb in smtp.VERBS if verb.logs_in}


class FaultError(ValueError):
    """A rule that cannot be used; the message says which field and why."""


@dataclass(frozen=True)
class FaultRule:
    """One line of a fault script."""

    protocol: str = "smtp"
    command: str = "*"
    argument: str | None = None  # regular expression, searched case-insensitively
    account: str | None = None
    client: str | None = None  # an address or a network (CIDR)
    nth: int | None = None
    every: int | None = None
    after: int | None = None
    from_seconds: float | None = None
    probability: float | None = None
    times: int | None = None  # fire at most this many times (per scope)
    scope: str = "session"
    reply: tuple[str, ...] = ()
    delay: float = 0.0
    drop: bool = False
    index: int = 0  # position in the script, for seeding and messages
    source_line: int | None = None
    _pattern: Any = field(default=None, compare=False, repr=False)
    _network: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        when = []
        if self.nth:
            when.append(f"#{self.nth}")
        if self.every:
            when.append(f"every {self.every}")
        if self.after:
            when.append(f"after {self.after}")
        what = " / ".join(self.reply) if self.reply else ("drop" if self.drop else f"delay {self.delay:g}s")
        return f"{self.protocol}:{self.command}{' ' + ' '.join(when) if when else ''} -> {what}"


@dataclass(frozen=True)
class FaultAction:
    """What the session does instead of (or before) its normal answer."""

    rule: FaultRule
    reply: tuple[str, ...]
    delay: float
    drop: bool


_FIELDS = {
    "protocol", "command", "argument", "account", "client", "nth", "every", "after",
    "from_seconds", "probability", "times", "scope", "reply", "delay", "drop",
}


def rule_from_table(table: Mapping[str, Any], index: int, line: int | None = None) -> FaultRule:
    """Build and check a rule from a `[[faults]]` table."""
    unknown = set(table) - _FIELDS
    if unknown:
        raise FaultError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
    protocol = str(table.get("protocol", "smtp")).lower()
    if protocol not in ("smtp", "pop3"):
        raise FaultError("protocol must be smtp or pop3")
    command = str(table.get("command", "*")).upper()
    known = SMTP_COMMANDS if protocol == "smtp" else POP3_COMMANDS
    if command not in known | {CONNECT, "*"} and not (protocol == "smtp" and command == DATA_END):
        raise FaultError(f"unknown {protocol.upper()} command {command!r}")
    reply = table.get("reply", ())
    if isinstance(reply, str):
        reply = tuple(reply.split("\n"))
    elif isinstance(reply, (list, tuple)) and all(isinstance(r, str) for r in reply):
        reply = tuple(reply)
    else:
        raise FaultError("reply must be a string or a list of strings")
    for line_text in reply:
        if protocol == "smtp" and not re.match(r"^[2-5]\d\d(?:[ -]|$)", line_text):
            raise FaultError(f"SMTP fault reply {line_text!r} must start with a 3-digit code")
        if protocol == "pop3" and not (line_text.startswith("+OK") or line_text.startswith("-ERR")):
            raise FaultError(f"POP3 fault reply {line_text!r} must start with +OK or -ERR")
    numbers: dict[str, Any] = {}
    for name, kind in (("nth", int), ("every", int), ("after", int), ("times", int)):
        value = table.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "after" else 1)):
            raise FaultError(f"{name} must be a whole number {'>= 0' if name == 'after' else '>= 1'}")
        numbers[name] = value
    for name in ("from_seconds", "delay", "probability"):
        value = table.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise FaultError(f"{name} must be a number >= 0")
    probability = table.get("probability")
    if probability is not None and probability > 1:
        raise FaultError("probability must be between 0 and 1")
    drop = table.get("drop", False)
    if not isinstance(drop, bool):
        raise FaultError("drop must be true or false")
    delay = float(table.get("delay", 0.0))
    if not reply and not drop and not delay:
        raise FaultError("a fault needs a reply, a delay or drop = true")
    scope = str(table.get("scope", "session"))
    if scope not in ("session", "server"):
        raise FaultError("scope must be session or server")
    pattern = None
    argument = table.get("argument")
    if argument is not None:
        try:
            pattern = re.compile(str(argument), re.IGNORECASE)
        except re.error as problem:
            raise FaultError(f"argument is not a valid regular expression: {problem}") from None
    network = None
    client = table.get("client")
    if client is not None:
        try:
            network = ipaddress.ip_network(str(client), strict=False)
        except ValueError:
            raise FaultError(f"client {client!r} is not an address or network") from None
    return FaultRule(
        protocol=protocol,
        command=command,
        argument=None if argument is None else str(argument),
        account=None if table.get("account") is None else str(table["account"]).lower(),
        client=None if client is None else str(client),
        from_seconds=table.get("from_seconds"),
        probability=probability,
        scope=scope,
        reply=reply,
        delay=delay,
        drop=drop,
        index=index,
        source_line=line,
        _pattern=pattern,
        _network=network,
        **numbers,
    )


_SPEC = re.compile(
    r"^\s*(?:(?P<protocol>smtp|pop3):)?(?P<command>[A-Za-z*][A-Za-z0-9\-]*)"
    r"(?:(?P<mark>[#%+])(?P<count>\d+))?\s+(?P<rest>.+?)\s*$",
    re.IGNORECASE,
)


def rule_from_spec(spec: str, index: int) -> FaultRule:
    """The command line's short form.

    `RCPT#2 452 4.5.3 Too many recipients` (the 2nd RCPT), `MAIL%3 451 ...` (every 3rd),
    `AUTH+2 421 ...` (after 2), `pop3:RETR#1 -ERR [SYS/TEMP] ...`, `DATA-END 554 5.7.1 DT:SPM`,
    `CONNECT 554 No SMTP service here`, `QUIT drop`, `RCPT delay=2.5`.
    """
    match = _SPEC.match(spec)
    if not match:
        raise FaultError(f"fault {spec!r} must look like 'RCPT#2 452 4.5.3 Too many recipients'")
    table: dict[str, Any] = {"protocol": (match["protocol"] or "").lower() or None, "command": match["command"]}
    if table["protocol"] is None:
        table["protocol"] = "pop3" if match["rest"].startswith(("+OK", "-ERR")) else "smtp"
    if match["mark"]:
        table[{"#": "nth", "%": "every", "+": "after"}[match["mark"]]] = int(match["count"])
    rest = match["rest"]
    if rest.lower() == "drop":
        table["drop"] = True
    elif rest.lower().startswith("delay="):
        try:
            table["delay"] = float(rest[6:])
        except ValueError:
            raise FaultError(f"fault {spec!r}: delay must be a number of seconds") from None
    else:
        table["reply"] = rest
    try:
        return rule_from_table(table, index)
    except FaultError as problem:
        raise FaultError(f"fault {spec!r}: {problem}") from None


class FaultCounter:
    """Occurrence counts and seeded dice for one scope (a session, or the whole server)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.matches: dict[int, int] = {}
        self.fired: dict[int, int] = {}
        self._dice: dict[int, random.Random] = {}

    def roll(self, rule: FaultRule) -> float:
        dice = self._dice.get(rule.index)
        if dice is None:
            dice = self._dice[rule.index] = random.Random(f"{self.seed}:{rule.index}")
        return dice.random()


@dataclass
class FaultScript:
    """The rules of one server and the server-wide counter; sessions bring their own counter."""

    rules: tuple[FaultRule, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        self.server_counter = FaultCounter(self.seed)

    def for_protocol(self, protocol: str) -> bool:
        return any(rule.protocol == protocol for rule in self.rules)

    def new_counter(self) -> FaultCounter:
        return FaultCounter(self.seed)

    def match(
        self,
        counter: FaultCounter,
        protocol: str,
        command: str,
        argument: str = "",
        *,
        account: str | None = None,
        client: str | None = None,
        elapsed: float = 0.0,
    ) -> FaultAction | None:
        """The first rule that fires for this command, counting every rule that matches."""
        fired: FaultAction | None = None
        for rule in self.rules:
            if rule.protocol != protocol or rule.command not in ("*", command):
                continue
            if rule._pattern is not None and not rule._pattern.search(argument):
                continue
            if rule.account is not None and (account or "").lower() != rule.account:
                continue
            if rule._network is not None:
                try:
                    if ipaddress.ip_address(client or "") not in rule._network:
                        continue
                except ValueError:
                    continue
            if rule.from_seconds is not None and elapsed < rule.from_seconds:
                continue
            scope = self.server_counter if rule.scope == "server" else counter
            count = scope.matches.get(rule.index, 0) + 1
            scope.matches[rule.index] = count
            if fired is not None:
                continue
            if rule.nth is not None and count != rule.nth:
                continue
            if rule.every is not None and count % rule.every:
                continue
            if rule.after is not None and count <= rule.after:
                continue
            if rule.times is not None and scope.fired.get(rule.index, 0) >= rule.times:
                continue
            if rule.probability is not None and scope.roll(rule) >= rule.probability:
                continue
            scope.fired[rule.index] = scope.fired.get(rule.index, 0) + 1
            fired = FaultAction(rule, rule.reply, rule.delay, rule.drop)
        return fired


@dataclass
class FaultTracker:
    """One session's fault counting: which events count, and the account and recipients a rule sees.

    The server feeds it live and the validator feeds it the client-side history, with the same
    calls, so both count every rule alike: `connect()` at the greeting, `command()` for each line
    the core dispatches as a command (before its answer), `answered()` with the answer (which
    events it means is decided there, once), and `end_of_data()` for a complete message, whose
    argument is the transaction's recipients.
    """

    script: FaultScript
    protocol: str
    counter: FaultCounter = field(init=False)
    account: str | None = None
    recipients: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.counter = self.script.new_counter()

    def connect(self, *, client: str | None = None, elapsed: float = 0.0) -> FaultAction | None:
        return self.script.match(self.counter, self.protocol, CONNECT, "", account=None, client=client, elapsed=elapsed)

    def command(self, verb: str, argument: str, *, client: str | None = None, elapsed: float = 0.0) -> FaultAction | None:
        return self.script.match(self.counter, self.protocol, verb, argument, account=self.account, client=client, elapsed=elapsed)

    def end_of_data(self, *, client: str | None = None, elapsed: float = 0.0) -> FaultAction | None:
        """The message is complete (before the server answers it); the transaction ends."""
        recipients, self.recipients = self.recipients, []
        return self.script.match(
            self.counter, self.protocol, DATA_END, " ".join(recipients), account=self.account, client=client, elapsed=elapsed
        )

    def answered(self, verb: str, accepted: bool, *, account: str | None = None, recipient: str | None = None) -> None:
        """What the answer to `verb` (AUTH for a SASL line) changes for the rules: an accepted
        STARTTLS/STLS forgets the account, a login sets it (`account`), MAIL starts a transaction
        and RCPT adds `recipient` (the core's `smtp.recipient_key`). A refusal changes nothing.
        """
        if not accepted:
            return
        if verb in TLS_VERBS:
            self.tls_started()
        elif verb in LOGIN_VERBS:
            self.logged_in(account)
        elif verb == "MAIL":
            self.mail_started()
        elif verb == "RCPT" and recipient is not None:
            self.recipient_accepted(recipient)

    def tls_started(self) -> None:
        """RFC 3207 4.2 / RFC 2595 4: the session starts over, nobody is logged in."""
        self.account = None

    def logged_in(self, account: str | None) -> None:
        self.account = account

    def mail_started(self) -> None:
        self.recipients = []

    def recipient_accepted(self, key: str) -> None:
        if key not in self.recipients:  # the envelope names a recipient once
            self.recipients.append(key)
