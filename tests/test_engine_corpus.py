"""The validator against the real mock servers: for every bundled persona and a corpus of command
sequences (right and wrong, SMTP and POP3), replay each sequence over a real socket and check that
`predict()` agrees with the reply the server actually sends, line by line.

The whole reply is compared too: `predicted_reply()` is the protocol core's own answer rendered by
the persona, so every line must equal the server's (code, enhanced code and text), except values
only the live server knows (a message size the client has not listed, a CRAM-MD5 challenge, a
queue id), which match anything.

`predict()` returns None when the server should accept a line, else the refusal code ("503",
"-ERR"); a None must meet a 2xx/3xx (SMTP) or +OK/+ (POP3) reply, a code must meet that exact code.
A disagreement names the persona, the sequence, the line and both codes.

The validator sees one session, like a learner; what the server remembers *across* sessions
(LOGIN-DELAY, failed-login counters, greylisting triplets) is out of its sight, so a persona with such
a policy gets a fresh server after every sequence that touched that memory. Personas are read at
test time, so new ones are covered as they are added.
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from mailprotocol import codec as sasl
from mockservers.profile import Profile, load_profile
from mockservers.profile_files import bundled_personas
from mockservers.server import EmbeddedServers
from mockservers.tls import client_ssl_context
from simulator.engine.session import LineKind, POP3Session, SMTPSession
from simulator.engine.prediction import HOLE
from simulator.engine.validate import predict, predicted_reply, validate_line
from tests.live import LineClient

HELO = "client.example.com"
LONG_SMTP = "NOOP " + "x" * 600
LONG_POP3 = "USER " + "x" * 300

# --- the corpus ----------------------------------------------------------------------------------
# A sequence is a list of lines. `@name` lines expand to a persona's macro (log in, open a
# transaction ...); `{name}` fields are the persona's accounts and payloads; `<CRAM>` and `<APOP>`
# are computed from the challenge / greeting the server actually sent.

SMTP_PREFIXES = {
    "connect": [],
    "ehlo": [f"EHLO {HELO}"],
    "helo": [f"HELO {HELO}"],
    "tls": ["@tls"],
    "login": ["@login"],
    "mail": ["@login", "MAIL FROM:<{user}>"],
    "rcpt": ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>"],
    "data": ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "DATA"],
}

# Lines probed after several prefixes: verbs, arguments, order.
GENERAL_PROBES = [
    f"EHOL {HELO}",
    f"HELLO {HELO}",
    f"ehlo {HELO}",
    "",
    "   NOOP",
    "NOOP hello there",
    "RSET now",
    "RSET",
    "QUIT now",
    "DATA now",
    "DATA",
    "HELO",
    "EHLO",
    "EHLO two words",
    "EHLO localhost",
    "EHLO [127.0.0.1]",
    "EHLO bad_host.example",
    "HELP",
    "HELP MAIL",
    "HELP BDAT",
    "HELP FOO",
    "VRFY",
    "VRFY {user}",
    "VRFY {nobody}",
    "EXPN staff",
    "TURN",
    "ETRN example.com",
    "ETRN",
    "ATRN",
    "BDAT 0 LAST",
    "USER alice",
    "STAT",
    "STARTTLS now",
    "MAILFROM:<{user}>",
    "MAIL\tFROM:<{user}>",
    "RCPT TO:<{user2}>",
    "MAIL FROM:<{user}>",
    "AUTH",
    LONG_SMTP,
]

MAIL_PROBES = [
    "MAIL FROM:<{user}>",
    "MAIL FROM: <{user}>",
    "MAIL FROM :<{user}>",
    "MAIL FROM:{user}",
    "MAIL FROM: {user}",
    "mail from: <{user}>",
    "MAIL <{user}>",
    "MAIL TO:<{user}>",
    "MAIL",
    "MAIL FROM:",
    "MAIL FROM:<>",
    "MAIL FROM:<{user}",
    "MAIL FROM:<{user}>SIZE=10",
    "MAIL FROM:<{user}> SIZE=abc",
    "MAIL FROM:<{user}> SIZE=1000",
    "MAIL FROM:<{user}> SIZE=999999999999",
    "MAIL FROM:<{user}> BODY=8BITMIME",
    "MAIL FROM:<{user}> BODY=7BIT",
    "MAIL FROM:<{user}> BODY=9BIT",
    "MAIL FROM:<{user}> BODY=BINARYMIME",
    "MAIL FROM:<{user}> SMTPUTF8",
    "MAIL FROM:<{user}> SMTPUTF8=yes",
    "MAIL FROM:<{user}> RET=FULL",
    "MAIL FROM:<{user}> RET=ALL",
    "MAIL FROM:<{user}> ENVID=abc+2B1",
    "MAIL FROM:<{user}> ENVID=a+b",
    "MAIL FROM:<{user}> AUTH=<>",
    "MAIL FROM:<{user}> AUTH=a+zz",
    "MAIL FROM:<{user}> FOO=bar",
    "MAIL FROM:<{user}> SIZE=1 SIZE=2",
    "MAIL FROM:<{user}> =x",
    "MAIL FROM:<nobody>",
    "MAIL FROM:<@example.com>",
    "MAIL FROM:<a..b@example.com>",
    "MAIL FROM:<user@bad_domain>",
    "MAIL FROM:<用户@example.com>",
    "MAIL FROM:<用户@example.com> SMTPUTF8",
    "MAIL FROM:<{remote}>",
    "MAIL FROM:<@relay.example:{user}>",
    "MAIL FROM:<" + "a" * 70 + "@example.com>",
    "MAIL FROM:<{upper_user}>",
    "MAIL FROM:<{user}> AUTH=" + "a" * 480 + "@example.com",
    "MAIL FROM:<{user}> SIZE=100 ENVID=" + "e" * 100 + " " + "X" * 400,
]
LONG_AUTH_PARAMETER = MAIL_PROBES[-2]

RCPT_PROBES = [
    "RCPT TO:<{user2}>",
    "RCPT TO: <{user2}>",
    "RCPT TO:{user2}",
    "rcpt to: <{user2}>",
    "RCPT TO:<>",
    "RCPT TO:<{nobody}>",
    "RCPT TO:<{remote}>",
    "RCPT TO:<{user2}> NOTIFY=SUCCESS,FAILURE",
    "RCPT TO:<{user2}> NOTIFY=NEVER,SUCCESS",
    "RCPT TO:<{user2}> NOTIFY=",
    "RCPT TO:<{user2}> ORCPT=rfc822;{user2}",
    "RCPT TO:<{user2}> ORCPT=bad",
    "RCPT TO:<{user2}> FOO",
    "RCPT TO:<用户@{domain}>",
    "RCPT <{user2}>",
    "RCPT TO:<{user2}",
    "RCPT",
    "DATA",
    "MAIL FROM:<{user}>",
    "AUTH PLAIN {plain}",
    "ETRN example.com",
    "BDAT 0 LAST",
]
#: RFC 5321 4.5.1: a server MUST accept postmaster at its domains, and `RCPT TO:<Postmaster>`.
POSTMASTER_PROBES = ["RCPT TO:<postmaster@{domain}>", "RCPT TO:<Postmaster>"]
RCPT_PROBES += POSTMASTER_PROBES

AUTH_PROBES = [
    "AUTH",
    "AUTH FOO",
    "AUTH PLAIN a b c",
    "AUTH PLAIN {plain}",
    "AUTH PLAIN {plain_wrong}",
    "AUTH PLAIN {plain_web}",
    "AUTH PLAIN {plain_nobody}",
    "AUTH PLAIN {b64user}",
    "AUTH PLAIN =",
    "AUTH PLAIN not-base64!",
    "AUTH PLAIN {plain_authzid}",
    "AUTH LOGIN",
    "AUTH LOGIN {b64user}",
    "AUTH LOGIN =",
    "AUTH CRAM-MD5",
    "AUTH CRAM-MD5 abc",
    "AUTH XOAUTH2",
    "auth login",
]

AUTH_EXCHANGES = [
    ["AUTH LOGIN", "{user}"],
    ["AUTH LOGIN", "{b64user}", "{secret}"],
    ["AUTH LOGIN", "{b64user}", "{b64secret}", "MAIL FROM:<{user}>"],
    ["AUTH LOGIN", "{b64user}", "{b64wrong}"],
    ["AUTH LOGIN", "{b64user}", "{b64web}"],
    ["AUTH LOGIN", "{b64user}", "{b64user}"],
    ["AUTH LOGIN", "*"],
    ["AUTH LOGIN", "{b64nobody}", "{b64secret}"],
    ["AUTH LOGIN", ""],
    ["AUTH LOGIN", "////"],
    ["AUTH LOGIN {b64user}", "{b64secret}"],
    ["AUTH PLAIN", "{plain}"],
    ["AUTH PLAIN", "{b64user}"],
    ["AUTH PLAIN", "{user}"],
    ["AUTH PLAIN", "*"],
    ["AUTH PLAIN", "{plain_wrong}", "AUTH PLAIN {plain}"],
    ["AUTH CRAM-MD5", "<CRAM>"],
    ["AUTH CRAM-MD5", "<CRAM-WRONG>"],
    ["AUTH CRAM-MD5", "{b64user}"],
    ["AUTH LOGIN", "{b64user}", "{b64secret}", "AUTH LOGIN"],
    ["AUTH PLAIN {plain_wrong}"] * 6,
]

DATA_TEXTS = [
    ["Subject: hi", "", "body", "."],
    ["From: <{user}>", "To: <{user2}>", "Date: Mon, 3 Jun 2024 09:15:02 +0000", "Subject: dots", "", ".leading", "..stuffed", "."],
    ["no colon here", "body", "."],
    ["."],
    ["Subject : spaced", "", "."],
    ["Subject: long", "", "x" * 1100, "."],
    ["Subject: typo", "", "QUIT", "."],
    ["Subject: 你好", "", "中文正文", "."],
    ["Subject: again", "", "body", ".", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "DATA", "Subject: 2", "", "two", "."],
    ["Subject: then", "", ".", "RSET", "QUIT"],
]

OTHER_SMTP = [
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "RCPT TO:<{user2}>", "DATA", "Subject: x", "", "."],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{nobody}>", "DATA"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{nobody}>", "RCPT TO:<{user2}>", "DATA", "Subject: x", "", "."],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "RSET", "DATA"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", f"EHLO {HELO}", "RCPT TO:<{user2}>"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "BDAT 7 LAST", "hello"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "BDAT abc"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "BDAT 5", "abc", "DATA"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "BDAT 5", "abc", "BDAT 5 LAST", "xyz"],
    ["@login", "MAIL FROM:<{user}>", "BDAT 3 LAST", "x"],
    [f"EHLO {HELO}", "STARTTLS", "MAIL FROM:<{user}>"],
    [f"EHLO {HELO}", "STARTTLS", f"EHLO {HELO}", "STARTTLS"],
    [f"EHLO {HELO}", "STARTTLS", "AUTH PLAIN {plain}"],
    ["STARTTLS"],
    ["AUTH PLAIN {plain}", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>"],
    ["AUTH LOGIN", "{b64user}", "{b64secret}"],
    [f"HELO {HELO}", "AUTH PLAIN {plain}", "MAIL FROM:<{user}> SIZE=100"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{remote}>", "DATA", "Subject: relay", "", "."],
    [f"EHLO {HELO}", "MAIL FROM:<{user}>", "RCPT TO:<{remote}>"],
    [f"EHLO {HELO}", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "DATA", "Subject: anon", "", "."],
    ["@login", "MAIL FROM:<{last_user}>"],
    ["@login", "MAIL FROM:<{user}> SMTPUTF8", "RCPT TO:<用户@{domain}>"],
    ["@login", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", "RCPT TO:<{user3}>", "RCPT TO:<{user}>", "RCPT TO:<{user2}>"],
    ["@login", "QUIT", "NOOP"],
    ["FOO", "BAR", "BAZ", "QUX", "ZAP", "NOOP"],
    # A greeting that is not fully qualified: refused at EHLO, at RCPT TO (Postfix) or never.
    ["EHLO laptop", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>", f"EHLO {HELO}", "MAIL FROM:<{user}>", "RCPT TO:<{user2}>"],
    # Addresses without angle brackets: 250, 501 or Gmail's 555.
    ["@login", "MAIL FROM:{user}", "RCPT TO:{user2}"],
    # 8-bit text undeclared and declared.
    ["@login", "MAIL FROM:<{user}> BODY=8BITMIME", "RCPT TO:<{user2}>", "DATA", "Subject: 你好", "", "中文", "."],
]

POP3_PROBES_AUTHORIZATION = [
    "STAT",
    "LIST",
    "RETR 1",
    "NOOP",
    "RSET",
    "DELE 1",
    "USER",
    "USER {user}",
    "USER {nobody}",
    "PASS {secret}",
    "APOP {user} <APOP>",
    "APOP {user} <APOP-WRONG>",
    "APOP {user} {secret}",
    "APOP {user} " + "g" * 32,
    "APOP {user} <APOP-UPPER>",
    "APOP {user}",
    "AUTH",
    "AUTH FOO",
    "AUTH PLAIN {plain}",
    "AUTH PLAIN {plain_wrong}",
    "AUTH PLAIN {b64user}",
    "AUTH LOGIN {b64user}",
    "AUTH CRAM-MD5",
    "CAPA",
    "STLS x",
    "QUIT",
    "HELO x",
    "STAY",
    "RETRV 1",
    "",
    LONG_POP3,
    "user {user}",
]

POP3_SEQUENCES = [
    ["USER {user}", "PASS {secret}"],
    ["USER {user}", "PASS {wrong}"],
    ["USER {user}", "PASS {web}"],
    ["USER {user}", "PASS"],
    ["USER {nobody}", "PASS {secret}"],
    ["USER {user}", "USER {user2}", "PASS {secret2}"],
    ["AUTH PLAIN", "{plain}"],
    ["AUTH PLAIN", "{b64user}"],
    ["AUTH LOGIN", "{b64user}", "{b64secret}"],
    ["AUTH LOGIN", "{user}"],
    ["AUTH LOGIN", "*"],
    ["AUTH CRAM-MD5", "<CRAM>"],
    ["STLS", "USER {user}", "PASS {secret}", "STAT"],
    ["STLS", "STLS"],
]

POP3_PROBES_TRANSACTION = [
    "STAT",
    "STAT x",
    "LIST",
    "LIST 1",
    "LIST 0",
    "LIST 99",
    "LIST a",
    "UIDL",
    "UIDL 1",
    "UIDL 99",
    "RETR",
    "RETR 1",
    "RETR 0",
    "RETR 99",
    "RETR x",
    "RETR 12345678901",
    "TOP 1 0",
    "TOP 1",
    "TOP 1 x",
    "TOP 99 1",
    "DELE 1",
    "DELE 99",
    "NOOP",
    "NOOP x",
    "RSET",
    "RSET x",
    "USER {user}",
    "PASS x",
    "APOP {user} " + "a" * 32,
    "STLS",
    "AUTH PLAIN {plain}",
    "CAPA",
    "QUIT",
    "HELO x",
]

POP3_TRANSACTION_SEQUENCES = [
    ["DELE 1", "RETR 1", "RSET", "RETR 1"],
    ["DELE 1", "DELE 1", "RSET"],
    ["DELE 1", "LIST 1", "UIDL 1", "TOP 1 0", "RSET"],
    ["LIST", "RETR 2", "TOP 2 1"],
    ["DELE 2", "STAT", "LIST 2", "RSET", "STAT"],
]


@dataclasses.dataclass(frozen=True)
class Sequence:
    name: str
    protocol: str
    lines: tuple[str, ...]


def corpus() -> list[Sequence]:
    out: list[Sequence] = []
    def name(prefix: str, index: int, probe: str) -> str:
        return f"{prefix}#{index}/{probe[:40]!r}"

    for prefix in ("connect", "ehlo"):
        for index, probe in enumerate(GENERAL_PROBES):
            out.append(Sequence("smtp/" + name(prefix, index, probe), "smtp", tuple(SMTP_PREFIXES[prefix] + [probe])))
    for prefix in ("helo", "login", "mail", "rcpt"):
        for index, probe in enumerate(GENERAL_PROBES[:20]):
            out.append(Sequence("smtp/" + name(prefix, index, probe), "smtp", tuple(SMTP_PREFIXES[prefix] + [probe])))
    for prefix in ("ehlo", "login"):
        for index, probe in enumerate(MAIL_PROBES):
            out.append(Sequence("smtp/mail-" + name(prefix, index, probe), "smtp", tuple(SMTP_PREFIXES[prefix] + [probe])))
    for prefix, probes in (("mail", RCPT_PROBES), ("ehlo", RCPT_PROBES[:6])):
        for index, probe in enumerate(probes):
            out.append(Sequence("smtp/rcpt-" + name(prefix, index, probe), "smtp", tuple(SMTP_PREFIXES[prefix] + [probe])))
    for prefix, probes in (("ehlo", AUTH_PROBES), ("tls", AUTH_PROBES), ("login", AUTH_PROBES[:4]), ("mail", AUTH_PROBES[:4])):
        for index, probe in enumerate(probes):
            out.append(Sequence("smtp/auth-" + name(prefix, index, probe), "smtp", tuple(SMTP_PREFIXES[prefix] + [probe])))
    for prefix, exchanges in (("ehlo", AUTH_EXCHANGES), ("tls", AUTH_EXCHANGES[:12])):
        for index, exchange in enumerate(exchanges):
            out.append(Sequence("smtp/exchange-" + name(prefix, index, " | ".join(exchange)), "smtp", tuple(SMTP_PREFIXES[prefix] + exchange)))
    for index, text in enumerate(DATA_TEXTS):
        out.append(Sequence("smtp/" + name("data", index, " | ".join(text)), "smtp", tuple(SMTP_PREFIXES["data"] + text)))
    for index, lines in enumerate(OTHER_SMTP):
        out.append(Sequence(f"smtp/other#{index}/{' | '.join(lines)[:60]!r}", "smtp", tuple(lines)))
    for index, probe in enumerate(POP3_PROBES_AUTHORIZATION):
        out.append(Sequence("pop3/" + name("connect", index, probe), "pop3", (probe,)))
    for index, lines in enumerate(POP3_SEQUENCES):
        out.append(Sequence("pop3/" + name("sequence", index, " | ".join(lines)), "pop3", tuple(lines)))
    for index, probe in enumerate(POP3_PROBES_TRANSACTION):
        if " 99" not in probe:  # without STAT/LIST the client cannot know how many messages there are
            out.append(Sequence("pop3/" + name("login", index, probe), "pop3", ("@pop3login", probe)))
        out.append(Sequence("pop3/" + name("stat", index, probe), "pop3", ("@pop3login", "STAT", probe)))
    for index, lines in enumerate(POP3_TRANSACTION_SEQUENCES):
        out.append(Sequence("pop3/" + name("stat-sequence", index, " | ".join(lines)), "pop3", ("@pop3login", "STAT", *lines)))
    return out


# --- per persona: accounts, payloads, macros -------------------------------------------------------


@dataclasses.dataclass
class Persona:
    profile: Profile

    @property
    def accounts(self) -> list[Any]:
        return list(self.profile.accounts)

    def values(self) -> dict[str, str]:
        accounts = self.accounts
        first = accounts[0]
        second = accounts[1] if len(accounts) > 1 else accounts[0]
        third = accounts[2] if len(accounts) > 2 else second
        domain = self.profile.local_domains[0] if self.profile.local_domains else first.domain
        web = first.password or "web-password-123"
        b64 = sasl.b64encode_text
        return {
            "user": first.address,
            "upper_user": first.address.upper(),
            "secret": first.secret,
            "user2": second.address,
            "secret2": second.secret,
            "user3": third.address,
            "last_user": accounts[-1].address,
            "nobody": f"nobody-here@{domain}",
            "remote": "someone@remote.example",
            "domain": domain,
            "wrong": "not-the-secret",
            "web": web,
            "b64user": b64(first.address),
            "b64secret": b64(first.secret),
            "b64wrong": b64("not-the-secret"),
            "b64web": b64(web),
            "b64nobody": b64(f"nobody-here@{domain}"),
            "plain": sasl.plain_payload(first.address, first.secret),
            "plain_wrong": sasl.plain_payload(first.address, "not-the-secret"),
            "plain_web": sasl.plain_payload(first.address, web),
            "plain_nobody": sasl.plain_payload(f"nobody-here@{domain}", "x"),
            "plain_authzid": sasl.plain_payload(first.address, first.secret, authzid=second.address),
        }

    @property
    def smtp_tls_for_auth(self) -> bool:
        profile = self.profile
        return profile.policies.require_tls_for_auth or not profile.smtp_auth_mechanisms(False)

    def smtp_login(self, tls: bool) -> list[str]:
        lines = [f"EHLO {HELO}"]
        if tls or self.smtp_tls_for_auth:
            lines += ["STARTTLS", f"EHLO {HELO}"]
        mechanisms = self.profile.smtp_auth_mechanisms(True if (tls or self.smtp_tls_for_auth) else False)
        if "PLAIN" in mechanisms:
            lines.append("AUTH PLAIN {plain}")
        elif "LOGIN" in mechanisms:
            lines += ["AUTH LOGIN", "{b64user}", "{b64secret}"]
        return lines

    def pop3_implicit_tls(self) -> bool:
        policies = self.profile.policies
        return policies.require_tls_for_auth and not self.profile.pop3_has("STLS", False)

    def pop3_login(self) -> list[str]:
        lines = []
        if self.profile.policies.require_tls_for_auth and self.profile.pop3_has("STLS", False):
            lines.append("STLS")
        return lines + ["USER {user}", "PASS {secret}"]

    def expand(self, sequence: Sequence) -> tuple[list[str], bool]:
        """The lines to send, and whether to connect with implicit TLS."""
        lines: list[str] = []
        implicit = False
        for line in sequence.lines:
            if line == "@login":
                lines += self.smtp_login(False)
            elif line == "@tls":
                lines += [f"EHLO {HELO}", "STARTTLS", f"EHLO {HELO}"]
            elif line == "@pop3login":
                lines += self.pop3_login()
                implicit = self.pop3_implicit_tls()
            else:
                lines.append(line)
        values = self.values()
        return [_fill(line, values) for line in lines], implicit


def _fill(line: str, values: dict[str, str]) -> str:
    if "{" not in line:
        return line
    return line.format_map(values)


# --- the runner ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    lines_checked: int = 0
    sequences: int = 0
    skipped: int = 0
    texts_checked: int = 0  # replies whose whole text (every line) was compared
    texts_with_unknowns: int = 0  # of those, replies with a value only the server knew (a size, a challenge)
    disagreements: list[str] = dataclasses.field(default_factory=list)


class Lab:
    """One persona's servers (restarted when cross-session memory would leak into a sequence)."""

    def __init__(self, name: str, data_dir: Path) -> None:
        self.name = name
        profile = load_profile(name)
        # Hundreds of failed logins from one address: the server-wide throttle (docs/security.md,
        # tested in test_lab_limits.py) would slow and then lock them; replies are compared here.
        self.profile = dataclasses.replace(
            profile, policies=dataclasses.replace(profile.policies, auth_failure_delay=0, auth_lockout_failures=0)
        )
        self.persona = Persona(self.profile)
        self.data_dir = data_dir
        self.servers: EmbeddedServers | None = None
        self.tls_context: ssl.SSLContext | None = None
        self.start()

    def start(self) -> None:
        self.servers = EmbeddedServers(self.profile, self.data_dir, smtps_port=0, pop3s_port=0, record_transcripts=False)
        self.servers.start()
        assert self.servers.servers is not None
        files = self.servers.servers.tls_files
        self.tls_context = client_ssl_context(files.ca_cert) if files else None

    def stop(self) -> None:
        if self.servers is not None:
            self.servers.stop()
            self.servers = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def port(self, protocol: str, implicit_tls: bool) -> int:
        assert self.servers is not None
        if self.profile.policies.implicit_tls_only:
            implicit_tls = True
        name = protocol.upper() + ("S" if implicit_tls else "")
        return self.servers.port_of(name)

    def top_up(self, minimum: int = 3) -> None:
        """Every mailbox holds at least `minimum` messages before a POP3 sequence."""
        assert self.servers is not None and self.servers.servers is not None
        store = self.servers.servers.store
        for account in self.profile.accounts:
            missing = minimum - len(store.messages(account.address))
            for index in range(max(0, missing)):
                store.deliver(
                    [account.address],
                    f"From: <corpus@example.com>\r\nSubject: corpus {index}\r\n\r\nbody {index}\r\n".encode(),
                )

    @property
    def timeout(self) -> float:
        return 5.0 + 3 * self.profile.policies.tarpit_delay


def run_sequence(lab: Lab, sequence: Sequence, outcome: Outcome) -> dict[str, bool]:
    """Replay one sequence; returns what cross-session memory it touched."""
    profile = lab.profile
    lines, implicit = lab.persona.expand(sequence)
    implicit = implicit or profile.policies.implicit_tls_only
    if sequence.protocol == "pop3":
        lab.top_up()
    touched = {"login": False, "auth_failure": False, "rcpt": False}
    port = lab.port(sequence.protocol, implicit)
    client = LineClient(port, timeout=lab.timeout, tls_context=lab.tls_context if implicit else None)
    session: SMTPSession | POP3Session = SMTPSession() if sequence.protocol == "smtp" else POP3Session()
    if implicit:
        session.tls_active = True
    bdat: tuple[int, str, str | None] | None = None  # a BDAT command whose reply follows its chunk
    where = f"{lab.name} {sequence.name}"
    try:
        session.received(client.smtp_reply() if sequence.protocol == "smtp" else client.pop3_reply())
        for number, template in enumerate([*lines, "QUIT"], start=1):
            if session.closed:
                break
            if number > len(lines) and isinstance(session, SMTPSession) and (session.data_mode or session.bdat_remaining):
                break
            line = dynamic_line(template, session, lab.persona)
            predicted = predict(line, session, profile)
            diagnostics = validate_line(line, session=session, profile=profile, lang="en")
            shown = next((d.code for d in diagnostics if d.code and d.code[0] in "45" or d.code == "-ERR"), None)
            if shown != predicted:
                outcome.disagreements.append(f"{lab.name} {sequence.name}: {line!r}: the diagnostics show {shown}, the core decides {predicted}")
            text = predicted_reply(line, session, profile)
            extra: list[Any] = []
            if predicted is not None and profile.quirks.disconnect_after_unknown:
                diagnostics = validate_line(line, session=session, profile=profile, lang="en")
                extra = [d for d in diagnostics if d.id == "too-many-unknown"]  # a second reply, then hang-up
            kind = session.sent(line)
            client.send(line)
            outcome.lines_checked += 1
            answered = (number, line, predicted, text)
            if kind in (LineKind.MESSAGE, LineKind.OCTETS):
                if predicted is not None:
                    outcome.disagreements.append(f"{where}: line {number} {line!r} is message text, predicted {predicted}")
                if kind is LineKind.MESSAGE or session.bdat_remaining or bdat is None:
                    continue
                answered, bdat = bdat, None
            elif kind is LineKind.COMMAND and isinstance(session, SMTPSession) and session.bdat_remaining:
                if "CHUNKING" in session.capabilities:
                    bdat = answered  # BDAT n: the reply comes after the n octets
                    continue
                session.bdat_remaining = 0  # no CHUNKING: BDAT is an unknown command, answered at once
            reply = read_reply(client, session, line)
            line_number, sent, prediction, text = answered
            actual = reply_code(reply, sequence.protocol)
            if not agrees(prediction, actual):
                outcome.disagreements.append(
                    f"{where}: line {line_number} {sent!r}: predicted {prediction or 'accept'}, server said {reply!r}"
                )
            if text is not None:
                outcome.texts_checked += 1
                outcome.texts_with_unknowns += any(HOLE in part for part in text.lines) or text.open_ended
                if not text.matches(reply):
                    outcome.disagreements.append(
                        f"{where}: line {line_number} {sent!r}: predicted text {text.shown()!r}, server said {reply!r}"
                    )
            note_touched(touched, session, sent, actual, sequence.protocol)
            session.received(reply)
            for diagnostic in extra:
                second = read_reply(client, session, line)
                if reply_code(second, sequence.protocol) != diagnostic.code:
                    outcome.disagreements.append(f"{where}: line {number} {line!r}: expected a second reply {diagnostic.code}, got {second!r}")
                session.received(second)
            if session.tls_pending:
                client.sock = lab.tls_context.wrap_socket(client.sock, server_hostname="localhost")  # type: ignore[union-attr]
                session.tls_started()
    except (ConnectionError, OSError) as error:
        if not closing_reply(session, profile):
            outcome.disagreements.append(f"{where}: connection ended unexpectedly ({error}) after {session.transcript[-3:]}")
    finally:
        client.close()
    outcome.sequences += 1
    return touched


def dynamic_line(template: str, session: Any, persona: Persona) -> str:
    values = persona.values()
    account = persona.accounts[0]
    if template in ("<CRAM>", "<CRAM-WRONG>"):
        challenge = session.auth.challenge if session.auth is not None else ""
        secret = account.secret if template == "<CRAM>" else "wrong"
        return sasl.cram_md5_response(account.address, secret, challenge or "")
    if "<APOP" in template:
        stamp = session.apop_timestamp or "<none@example>"
        digest = sasl.apop_digest(stamp, account.secret if "WRONG" not in template else "wrong")
        if "UPPER" in template:
            digest = digest.upper()
        return template.replace("<APOP>", digest).replace("<APOP-WRONG>", digest).replace("<APOP-UPPER>", digest)
    return template if "{" not in template else template.format_map(values)


def read_reply(client: LineClient, session: Any, line: str) -> list[str]:
    if isinstance(session, SMTPSession):
        return client.smtp_reply()
    item = session._pending[-1] if session._pending else None
    multiline = bool(item and item.multiline)
    if line.strip().upper() == "AUTH" and item is not None and item.kind == "command":
        multiline = True
    return client.pop3_reply(multiline)


def reply_code(reply: list[str], protocol: str) -> str:
    last = reply[-1] if protocol == "smtp" else reply[0]
    if protocol == "smtp":
        return last[:3]
    for indicator in ("+OK", "-ERR", "+"):
        if last.startswith(indicator):
            return indicator
    return last[:4]


def agrees(prediction: str | None, actual: str) -> bool:
    if prediction is None:
        return actual[:1] in ("2", "3") or actual in ("+OK", "+")
    return prediction == actual


def note_touched(touched: dict[str, bool], session: Any, line: str, actual: str, protocol: str) -> None:
    verb = line.strip().split(" ")[0].upper()
    if actual in ("535", "-ERR") and (verb in ("AUTH", "PASS", "APOP") or (session.auth is not None)):
        touched["auth_failure"] = True
    if protocol == "pop3" and actual == "+OK" and (verb in ("PASS", "APOP") or session.auth is not None):
        touched["login"] = True
    if protocol == "pop3" and actual == "+OK" and verb == "AUTH" and len(line.split()) > 2:
        touched["login"] = True
    if verb == "RCPT":
        touched["rcpt"] = True


def closing_reply(session: Any, profile: Profile) -> bool:
    """The server closed after its last reply on purpose (421, or a persona's close_after key)."""
    for direction, text in reversed(session.transcript):
        if direction != "S":
            continue
        if text.startswith("421"):
            return True
        keys = profile.smtp_close_after if isinstance(session, SMTPSession) else profile.pop3_close_after
        for key in keys:
            rendered = profile.smtp(key) if isinstance(session, SMTPSession) else profile.pop3(key)
            if rendered and rendered[-1] == text:
                return True
        return False
    return False


def needs_restart(profile: Profile, touched: dict[str, bool]) -> bool:
    policies = profile.policies
    return bool(
        (policies.login_delay and touched["login"])
        or (policies.max_auth_failures and touched["auth_failure"])
        or (policies.greylist_delay and touched["rcpt"])
    )


def run_corpus(name: str, data_dir: Path, sequences: list[Sequence]) -> Outcome:
    lab = Lab(name, data_dir)
    outcome = Outcome()
    try:
        for sequence in sequences:
            touched = run_sequence(lab, sequence, outcome)
            if needs_restart(lab.profile, touched):
                lab.restart()
    finally:
        lab.stop()
    return outcome


def selected(name: str) -> list[Sequence]:
    everything = corpus()
    chosen = list(everything)
    if load_profile(name).policies.tarpit_delay:
        chosen = chosen[::10]  # a tarpit answers slowly on purpose: a sample keeps the test short
    return chosen


# --- the tests -------------------------------------------------------------------------------------


def test_corpus_is_big_enough() -> None:
    sequences = corpus()
    assert len(sequences) >= 200
    assert {s.protocol for s in sequences} == {"smtp", "pop3"}
    assert len({s.name for s in sequences}) == len(sequences), "sequence names must be unique"


@pytest.mark.parametrize("name", bundled_personas())
def test_validator_predicts_the_server(name: str, tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = run_corpus(name, tmp_path, selected(name))
    assert outcome.sequences >= 200 or load_profile(name).policies.tarpit_delay
    assert outcome.texts_checked >= outcome.lines_checked * 0.8 or load_profile(name).policies.tarpit_delay
    assert outcome.texts_with_unknowns < outcome.texts_checked / 4, "most predictions must be exact texts"
    assert not outcome.disagreements, (
        f"{len(outcome.disagreements)} disagreement(s) in {outcome.lines_checked} lines "
        f"({time.monotonic() - started:.1f} s):\n" + "\n".join(outcome.disagreements[:60])
    )
