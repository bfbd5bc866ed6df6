"""The bundled personas (163, gmail, outlook, postfix, spot-top, spot-codes) with their real texts,
the profile examples of docs/profiles.md, and `maillab lint` on broken profiles (exact file:line)."""

from __future__ import annotations

import email.utils

from twisted.internet.task import Clock

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import pop3, smtp
from mockservers import schema
from mockservers.lint import lint_profile
from mockservers.profile import load_profile
from mockservers.profile_files import bundled_personas
from mailprotocol.codec import b64encode_text as b64
from mockservers.store import MailStore

ROOT = Path(__file__).resolve().parent.parent
PROFILES = Path(__file__).resolve().parent / "profiles"
MAILLAB = Path(sys.executable).with_name("maillab")

GMAIL_ID = "5b1f17b1804b1-42f5d3ac7a1sm2617375e9.11 - gsmtp"


def plain(user: str, secret: str) -> str:
    return "AUTH PLAIN " + b64(f"\0{user}\0{secret}")


def send_message(h, body: bytes = b"Subject: hello\r\n\r\nhello\r\n") -> list[str]:
    return h.raw(body + b".\r\n")


def preloaded_store(tmp_path: Path, persona: str) -> MailStore:
    """A store holding the persona's [[mail]], as `maillab serve` preloads it."""
    store = MailStore(tmp_path)
    for mail in load_profile(persona).preloaded_mail:
        store.deliver([mail.to], mail.content)
    return store


# --- 163 (Coremail) ----------------------------------------------------------------------------


def test_163_session_with_an_authorization_code(tmp_path):
    h = smtp(tmp_path, "163")
    assert h.greeting == ["220 163.com Anti-spam GT for Coremail System (163com[20141201])"]
    assert h.send("HELO pc") == ["250 OK"]
    assert h.send("EHLO pc") == [
        "250-mail",
        "250-PIPELINING",
        "250-AUTH LOGIN PLAIN",
        "250-AUTH=LOGIN PLAIN",
        "250-coremail 1Uxr2xKj7kG0xkI17xGrU7I0s8FY2U3Uj8Cz28x1UUUUU7Ic2I0Y2UFRbmXhUCa0xDrUUUUj",
        "250-STARTTLS",
        "250 8BITMIME",
    ]
    assert h.send("mail from: <learner@163.com>") == [
        "553 authentication is required,163 smtp12,EMCowADHlUpKl3RaU1rCAw--.32180S2 1517393738"
    ]
    assert h.send("AUTH LOGIN") == ["334 dXNlcm5hbWU6"]
    assert h.send(b64("learner@163.com")) == ["334 UGFzc3dvcmQ6"]
    assert h.send(b64("password123")) == ["535 Error: authentication failed"]  # the web password
    assert h.send("AUTH LOGIN") == ["334 dXNlcm5hbWU6"]
    assert h.send(b64("learner@163.com")) == ["334 UGFzc3dvcmQ6"]
    assert h.send(b64("WXYZABCDEFGHIJKL")) == ["235 Authentication successful"]
    assert h.send("mail from: <friend@163.com>") == ["553 Mail from must equal authorized user"]
    assert h.send("mail from: <learner@163.com>") == ["250 Mail OK"]
    assert h.send("rcpt to: <nobody@163.com>") == ["550 Invalid User"]
    assert h.send("rcpt to: <friend@163.com>") == ["250 Mail OK"]
    assert h.send("rcpt to: <pal@126.com>") == ["250 Mail OK"]
    assert h.send("DATA") == ["354 End data with <CR><LF>.<CR><LF>"]
    [reply] = send_message(h)
    assert re.fullmatch(r"250 Mail OK queued as smtp10,[0-9A-F]{10} \d+", reply), reply
    assert h.send("QUIT") == ["221 Bye"]
    assert len(h.store.messages("friend@163.com")) == 1
    assert len(h.store.messages("pal@126.com")) == 1


def test_163_errors(tmp_path):
    h = smtp(tmp_path, "163")
    assert h.send("FOO") == ["500 Error: bad syntax"]
    h.send("EHLO pc")
    assert h.send(plain("nosmtp@163.com", "STUVWXYZABCDEFGH")) == ["235 Authentication successful"]
    assert h.send("MAIL FROM:<nosmtp@163.com>") == ["550 User has no permission"]


def test_163_size_limit(tmp_path):
    profile = load_profile("163")
    small = dataclasses.replace(profile, policies=dataclasses.replace(profile.policies, max_message_size=100))
    h = smtp(tmp_path, small)
    h.send("EHLO pc")
    h.send(plain("learner@163.com", "WXYZABCDEFGHIJKL"))
    h.send("MAIL FROM:<learner@163.com>")
    h.send("RCPT TO:<friend@163.com>")
    assert h.send("DATA")[0].startswith("354")
    assert send_message(h, b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n") == [
        "552 Requested mail action aborted: exceeded mailsize limit"
    ]


def test_163_auth_failure_limit_then_451(tmp_path):
    h = smtp(tmp_path, "163")
    h.send("EHLO pc")
    for _ in range(5):
        assert h.send(plain("learner@163.com", "wrong")) == ["535 Error: authentication failed"]
    refused = ["451 Requested mail action not taken: too much fail authentication"]
    assert h.send(plain("learner@163.com", "WXYZABCDEFGHIJKL")) == refused  # even the right code now
    assert h.send("AUTH LOGIN") == refused
    assert not h.closed  # "refuse", not "disconnect"
    # The count is per client address and server, not per session.
    again = smtp(tmp_path, "163", store=h.store)
    again.context.limits = h.context.limits
    again.send("EHLO pc")
    assert again.send("AUTH LOGIN") == refused


def test_163_pop3(tmp_path):
    store = preloaded_store(tmp_path, "163")
    size = store.messages("learner@163.com")[0].size
    h = pop3(tmp_path, "163", store=store)
    assert h.greeting == ["+OK Welcome to coremail Mail Pop3 Server (163coms[10774b260cc7a37d26d71b52404dcf5cs])"]
    assert h.send("USER learner@163.com") == ["+OK core mail"]
    assert h.send("PASS password123") == ["-ERR Unable to log on"]
    assert h.send("USER nobody@163.com") == ["+OK core mail"]
    assert h.send("PASS whatever") == ["-ERR Unable to log on"]
    assert h.send("USER learner@163.com") == ["+OK core mail"]
    assert h.send("PASS WXYZABCDEFGHIJKL") == [f"+OK 1 message(s) [{size} byte(s)]"]
    assert h.send("LIST") == [f"+OK 1 {size}", f"1 {size}", "."]
    assert h.send("RETR 1")[0] == f"+OK {size} octets"
    assert h.send("QUIT") == ["+OK core mail"]


# --- Gmail -------------------------------------------------------------------------------------

GMAIL_EHLO_PLAIN = [
    "250-smtp.gmail.com at your service, [127.0.0.1]",
    "250-SIZE 35882577",
    "250-8BITMIME",
    "250-STARTTLS",
    "250-ENHANCEDSTATUSCODES",
    "250-PIPELINING",
    "250-CHUNKING",
    "250 SMTPUTF8",
]
GMAIL_EHLO_TLS = [
    "250-smtp.gmail.com at your service, [127.0.0.1]",
    "250-SIZE 35882577",
    "250-8BITMIME",
    "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
    "250-ENHANCEDSTATUSCODES",
    "250-PIPELINING",
    "250-CHUNKING",
    "250 SMTPUTF8",
]


def test_gmail_auth_needs_starttls_first(tmp_path):
    h = smtp(tmp_path, "gmail")
    assert h.greeting == [f"220 smtp.gmail.com ESMTP {GMAIL_ID}"]
    assert h.send("EHLO pc") == GMAIL_EHLO_PLAIN  # no AUTH line before TLS
    must = [f"530 5.7.0 Must issue a STARTTLS command first. {GMAIL_ID}"]
    assert h.send("AUTH LOGIN") == must
    assert h.send(plain("learner@gmail.com", "abcdefghijklmnop")) == must
    assert h.send("STARTTLS") == ["220 2.0.0 Ready to start TLS"]
    assert h.transport.tls_started_with is not None
    assert h.send("EHLO pc") == GMAIL_EHLO_TLS  # AUTH where STARTTLS was


def test_gmail_session_after_tls(tmp_path):
    h = smtp(tmp_path, "gmail")
    h.send("EHLO pc")
    h.send("STARTTLS")
    h.send("EHLO pc")
    assert h.send("MAIL FROM:<learner@gmail.com>") == [
        "530-5.7.0 Authentication Required. For more information, go to",
        f"530 5.7.0  https://support.google.com/mail/?p=WantAuthError {GMAIL_ID}",
    ]
    assert h.send(plain("learner@gmail.com", "password123")) == [
        "535-5.7.8 Username and Password not accepted. For more information, go to",
        f"535 5.7.8  https://support.google.com/mail/?p=BadCredentials {GMAIL_ID}",
    ]
    # Advertised, but OAuth cannot work offline: the real server's 504 for a mechanism it cannot do.
    assert h.send("AUTH XOAUTH2") == [f"504 5.7.4 Unrecognized authentication type. {GMAIL_ID}"]
    assert h.send(plain("learner@gmail.com", "abcdefghijklmnop")) == ["235 2.7.0 Accepted"]
    assert h.send("MAIL FROM:<learner@gmail.com>") == [f"250 2.1.0 OK {GMAIL_ID}"]
    assert h.send("RCPT TO:<nobody@gmail.com>") == [
        "550-5.1.1 The email account that you tried to reach does not exist. Please try",
        "550-5.1.1 double-checking the recipient's email address for typos or",
        "550-5.1.1 unnecessary spaces. For more information, go to",
        f"550 5.1.1  https://support.google.com/mail/?p=NoSuchUser {GMAIL_ID}",
    ]
    assert h.send("RCPT TO:<friend@gmail.com>") == [f"250 2.1.5 OK {GMAIL_ID}"]
    assert h.send("RCPT TO:<someone@example.org>") == [f"250 2.1.5 OK {GMAIL_ID}"]
    assert h.send("DATA") == [f"354  Go ahead {GMAIL_ID}"]
    [reply] = send_message(h)
    assert re.fullmatch(rf"250 2\.0\.0 OK  \d+ {re.escape(GMAIL_ID)}", reply), reply
    assert h.send("QUIT") == [f"221 2.0.0 closing connection {GMAIL_ID}"]
    assert len(h.store.messages("friend@gmail.com")) == 1


def test_gmail_pop3(tmp_path):
    store = preloaded_store(tmp_path, "gmail")
    h = pop3(tmp_path, "gmail", store=store)
    assert h.greeting == ["+OK Gpop ready for requests from 127.0.0.1 x12mb1234567pfb"]
    assert h.send("CAPA") == [
        "+OK Capability list follows", "USER", "RESP-CODES", "EXPIRE 0", "LOGIN-DELAY 300",
        "X-GOOGLE-VERHOEVEN", "UIDL", ".",
    ]
    # pop.gmail.com is POP3S only: on a plain connection no login.
    assert h.send("USER learner@gmail.com") == [
        "-ERR [AUTH] TLS required: pop.gmail.com speaks POP3 only over TLS (port 995)"
    ]
    h.send("QUIT")
    h = pop3(tmp_path, "gmail", store=store, implicit_tls=True)  # port 995
    assert h.send("USER learner@gmail.com") == ["+OK send PASS"]
    assert h.send("PASS password123") == ["-ERR [AUTH] Username and password not accepted."]
    assert h.send("USER learner@gmail.com") == ["+OK send PASS"]
    assert h.send("PASS abcdefghijklmnop") == ["+OK Welcome."]
    assert h.send("RETR 1")[0].startswith("+OK")
    assert h.send("QUIT") == ["+OK Farewell."]
    assert store.messages("learner@gmail.com") == []  # EXPIRE 0: retrieved, then gone at QUIT


def test_gmail_pop3_login_delay(tmp_path):
    first = pop3(tmp_path, "gmail", implicit_tls=True)
    first.send("USER learner@gmail.com")
    assert first.send("PASS abcdefghijklmnop") == ["+OK Welcome."]
    first.send("QUIT")
    second = pop3(tmp_path, "gmail", store=first.store, clock=first.clock, implicit_tls=True)
    second.context.limits = first.context.limits
    second.send("USER learner@gmail.com")
    assert second.send("PASS abcdefghijklmnop") == ["-ERR [LOGIN-DELAY] wait 300 more seconds before logging in again"]


# --- Microsoft 365 -----------------------------------------------------------------------------

OUTLOOK_HOST = "AM6PR04CA0012.outlook.office365.com"


def test_outlook_greeting_carries_the_current_date(tmp_path):
    """Exchange stamps its greeting with the time of the connection, not a fixed date."""
    for epoch in (1717406102, 1733300000):
        clock = Clock()
        clock.advance(epoch)
        h = smtp(tmp_path / str(epoch), "outlook", clock=clock)
        stamp = email.utils.formatdate(epoch, localtime=True)
        assert h.greeting == [f"220 {OUTLOOK_HOST} Microsoft ESMTP MAIL Service ready at {stamp}"]


def test_outlook_session(tmp_path):
    h = smtp(tmp_path, "outlook")
    assert h.greeting[0].startswith(f"220 {OUTLOOK_HOST} Microsoft ESMTP MAIL Service ready at ")
    assert h.send("EHLO laptop") == ["501 5.5.4 Invalid domain name"]
    plain_ehlo = [
        f"250-{OUTLOOK_HOST} Hello [127.0.0.1]", "250-SIZE 157286400", "250-PIPELINING", "250-DSN",
        "250-ENHANCEDSTATUSCODES", "250-STARTTLS", "250-8BITMIME", "250-CHUNKING", "250 SMTPUTF8",
    ]
    assert h.send("EHLO laptop.example.com") == plain_ehlo
    assert h.send("AUTH LOGIN") == ["530 5.7.0 Must issue a STARTTLS command first"]
    assert h.send("STARTTLS") == ["220 2.0.0 SMTP server ready"]
    tls_ehlo = plain_ehlo[:5] + ["250-AUTH LOGIN XOAUTH2"] + plain_ehlo[6:]
    assert h.send("EHLO laptop.example.com") == tls_ehlo
    assert h.send("MAIL FROM:<learner@contoso.com>") == ["530 5.7.57 Client not authenticated to send mail."]
    assert h.send("AUTH LOGIN") == ["334 VXNlcm5hbWU6"]
    assert h.send(b64("learner@contoso.com")) == ["334 UGFzc3dvcmQ6"]
    assert h.send(b64("wrong")) == ["535 5.7.3 Authentication unsuccessful"]
    # Only LOGIN (and XOAUTH2) are offered: PLAIN is refused like any unadvertised mechanism.
    assert h.send(plain("learner@contoso.com", "Passw0rd!2024")) == ["504 5.7.4 Unrecognized authentication type"]
    assert h.send("AUTH LOGIN " + b64("learner@contoso.com")) == ["334 UGFzc3dvcmQ6"]
    assert h.send(b64("Passw0rd!2024")) == ["235 2.7.0 Authentication successful"]
    assert h.send("MAIL FROM:<learner@contoso.com>") == ["250 2.1.0 Sender OK"]
    assert h.send("RCPT TO:<nobody@contoso.com>") == [
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    ]
    assert h.send("RCPT TO:<friend@contoso.com>") == ["250 2.1.5 Recipient OK"]
    assert h.send("DATA") == ["354 Start mail input; end with <CRLF>.<CRLF>"]
    [reply] = send_message(h)
    assert re.fullmatch(
        rf"250 2\.6\.0 <[0-9A-F]{{10}}@{OUTLOOK_HOST}> \[InternalId=\d+, Hostname={OUTLOOK_HOST}\] Queued mail for delivery",
        reply,
    ), reply
    assert h.send("QUIT") == ["221 2.0.0 Service closing transmission channel"]


def test_outlook_pop3(tmp_path):
    h = pop3(tmp_path, "outlook")
    assert h.greeting == ["+OK The Microsoft Exchange POP3 service is ready."]
    assert h.send("STLS") == ["+OK Begin TLS negotiation"]
    assert h.send("USER learner@contoso.com") == ["+OK"]
    assert h.send("PASS wrong") == ["-ERR Logon failure: unknown user name or bad password."]
    assert h.send("USER learner@contoso.com") == ["+OK"]
    assert h.send("PASS Passw0rd!2024") == ["+OK User successfully logged on."]
    assert h.send("QUIT") == ["+OK Microsoft Exchange Server POP3 server signing off."]


# --- Postfix + Dovecot -------------------------------------------------------------------------


def test_postfix_session(tmp_path):
    h = smtp(tmp_path, "postfix")
    assert h.greeting == ["220 mail.example.com ESMTP Postfix"]
    # smtpd_delay_reject = yes: the non-FQDN greeting is accepted, the refusal comes at RCPT TO.
    assert h.send("EHLO laptop")[0] == "250-mail.example.com"
    assert h.send("MAIL FROM:alice@example.com") == ["250 2.1.0 Ok"]  # strict_rfc821_envelopes = no
    assert h.send("RCPT TO:<bob@example.com>") == ["504 5.5.2 <laptop>: Helo command rejected: need fully-qualified hostname"]
    assert h.send("RSET") == ["250 2.0.0 Ok"]
    assert h.send("EHLO laptop.example.com") == [
        "250-mail.example.com", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ETRN", "250-STARTTLS",
        "250-AUTH PLAIN LOGIN", "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8", "250 CHUNKING",
    ]
    assert h.send("VRFY bob@example.com") == ["252 2.0.0 bob@example.com"]
    assert h.send("VRFY nobody@example.com") == [
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table"
    ]
    assert h.send(plain("alice@example.com", "alice-secret")) == ["235 2.7.0 Authentication successful"]
    assert h.send("MAIL FROM:<alice@example.com>") == ["250 2.1.0 Ok"]
    for rcpt in ("bob@example.com", "carol@example.com", "alice@example.com", "x@remote.example", "y@remote.example"):
        assert h.send(f"RCPT TO:<{rcpt}>") == ["250 2.1.5 Ok"], rcpt
    assert h.send("RCPT TO:<z@remote.example>") == ["452 4.5.3 Error: too many recipients"]
    assert h.send("DATA") == ["354 End data with <CR><LF>.<CR><LF>"]
    [reply] = send_message(h)
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as [0-9A-F]{10}", reply), reply
    assert h.send("QUIT") == ["221 2.0.0 Bye"]


def test_postfix_dovecot_pop3(tmp_path):
    store = MailStore(tmp_path)
    store.deliver(["bob@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
    size = store.messages("bob@example.com")[0].size
    h = pop3(tmp_path, "postfix", store=store)
    assert h.greeting == ["+OK Dovecot ready."]
    assert h.send("CAPA") == [
        "+OK", "CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS", "USER", "SASL PLAIN LOGIN", ".",
    ]
    assert h.send("USER nobody@example.com") == ["+OK"]
    assert h.send("PASS x") == ["-ERR [AUTH] Authentication failed."]
    assert h.send("USER bob@example.com") == ["+OK"]
    assert h.send("PASS wrong") == ["-ERR [AUTH] Authentication failed."]
    assert h.send("USER bob@example.com") == ["+OK"]
    assert h.send("PASS bob-secret") == ["+OK Logged in."]
    assert h.send("LIST") == ["+OK 1 messages:", f"1 {size}", "."]
    assert h.send("RETR 2") == ["-ERR There's no message 2."]
    assert h.send("DELE 1") == ["+OK Marked to be deleted."]
    assert h.send("QUIT") == ["+OK Logging out."]


# --- spot-the-bug exercises --------------------------------------------------------------------


def test_spot_top_advertises_top_but_answers_err(tmp_path):
    store = preloaded_store(tmp_path, "spot-top")
    h = pop3(tmp_path, "spot-top", store=store)
    assert "TOP" in h.send("CAPA")
    h.send("USER bob@example.net")
    assert h.send("PASS not-the-secret")[0].startswith("+OK")  # MailHog's bug: any secret works
    assert "TOP" in h.send("CAPA")  # still advertised in TRANSACTION state
    assert h.send("TOP 1 0") == ["-ERR unknown command"]
    retr = h.send("RETR 1")
    assert retr[0].startswith("+OK") and "Subject: Spot the bug" in retr


def test_spot_codes_failures_lack_enhanced_codes(tmp_path):
    h = smtp(tmp_path, "spot-codes")
    assert "250-ENHANCEDSTATUSCODES" in h.send("EHLO pc")
    assert h.send("RCPT TO:<bob@example.org>") == ["503 Error: need MAIL command"]
    assert h.send("MAIL FROM:<alice@example.org>") == ["250 2.1.0 Ok"]  # successes keep theirs
    assert h.send("RCPT TO:<nobody@example.org>") == [
        "550 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table"
    ]
    assert h.send("RCPT TO:<bob@example.org>") == ["250 2.1.5 Ok"]
    for _ in range(4):
        assert h.send("FOO") == ["500 Error: command not recognized"]
    assert not h.closed
    assert h.send("FOO") == ["500 Error: command not recognized", "502 Too many unrecognized commands, goodbye."]
    assert h.closed


def test_every_new_persona_documents_its_demo_accounts():
    for name in ("163", "gmail", "outlook", "postfix", "spot-top", "spot-codes"):
        profile = load_profile(name)
        assert profile.description
        assert profile.accounts and all(account.note for account in profile.accounts), name


# --- lint: bundled personas, documented examples, broken profiles ------------------------------


@pytest.mark.parametrize("name", bundled_personas())
def test_bundled_persona_lints_clean(name):
    assert [str(p) for p in lint_profile(name) if p.severity == "error"] == []


@pytest.mark.timeout(600)  # replays every lesson of the course against fresh servers
def test_maillab_lint_cli_on_every_bundled_persona():
    result = subprocess.run([str(MAILLAB), "lint"], capture_output=True, text=True, cwd=ROOT, timeout=540)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith("checked: 0 errors, 0 warnings"), result.stdout


GOOD = sorted((PROFILES / "good").glob("*.toml"))


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_documented_example_lints_clean_and_loads(path):
    assert [str(p) for p in lint_profile(path)] == []
    load_profile(path)


def test_docs_examples_are_the_tested_files():
    """Every example in docs/profiles.md that names a tests/profiles/good file is that file, verbatim."""
    docs = (ROOT / "docs" / "profiles.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(# tests/profiles/good/([\w.-]+\.toml)\n.*?)```", docs, re.DOTALL)
    assert {name for _, name in blocks} == {p.name for p in GOOD}
    for text, name in blocks:
        assert text == (PROFILES / "good" / name).read_text(encoding="utf-8"), name


def test_docs_cover_every_key():
    docs = (ROOT / "docs" / "profiles.md").read_text(encoding="utf-8")
    keys = (
        set(schema.SMTP_REPLY_COMMAND) | set(schema.POP3_REPLY_KEYS) | set(schema.POLICY_TYPES)
        | set(schema.QUIRK_TYPES) | set(schema.SCHEMA["faults"][0])
    ) - {"greeting"}
    missing = sorted(key for key in keys if f"`{key}`" not in docs)
    assert missing == []


def _bad(name: str) -> str:
    return str((PROFILES / "bad" / name).resolve())


BAD = [
    ("unknown_key.toml", 7,
     "unknown key 'policies.require_tsl_for_auth' (known here: " + ", ".join(schema.POLICY_TYPES) + ")"),
    ("wrong_type.toml", 6, "policies.max_recipients must be a whole number, got 'ten'"),
    ("fault_unknown_command.toml", 10, "fault #2: unknown SMTP command 'MAILFROM'"),
    ("code_mismatch.toml", 7,
     "reply 'mail_ok': code 354 does not fit MAIL (RFC 5321 4.3.2 allows "
     + ", ".join(map(str, sorted(schema.ALLOWED_CODES["MAIL"]))) + ")"),
    ("enhanced_class.toml", 6,
     "reply 'unknown_user': enhanced status code 4.1.1 has class 4 but the reply code is 550 "
     "(RFC 3463: the class must equal the first digit)"),
    ("unknown_placeholder.toml", 7, "reply 'greeting': unknown placeholder {hostname}"),
    ("syntax_error.toml", 6, "TOML syntax error: Illegal character '\\n'"),
    ("missing_extends.toml", 3,
     "no persona named 'no-such-persona' (known: " + ", ".join(bundled_personas()) + ")"),
    ("duplicate_account.toml", 10, "account 'alice@example.com' is listed twice"),
    ("mail_not_account.toml", 10, "mail #2 is for 'nobody@example.com', which is not an account"),
]


def test_every_bad_profile_is_tested():
    assert {name for name, _, _ in BAD} == {p.name for p in (PROFILES / "bad").glob("*.toml")}


@pytest.mark.parametrize("name, line, message", BAD, ids=[b[0] for b in BAD])
def test_bad_profile_reports_file_and_line(name, line, message):
    assert [str(p) for p in lint_profile(PROFILES / "bad" / name)] == [f"{_bad(name)}:{line}: {message}"]


def test_maillab_lint_cli_on_bad_profiles():
    names = ["code_mismatch.toml", "enhanced_class.toml", "syntax_error.toml"]
    result = subprocess.run(
        [str(MAILLAB), "lint", *[f"tests/profiles/bad/{n}" for n in names]],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 1
    expected = [f"{_bad(name)}:{line}: {message}" for name, line, message in BAD if name in names]
    *problems, summary = result.stdout.splitlines()
    assert problems == expected
    assert summary.endswith("checked: 3 errors, 0 warnings"), summary


def test_find_account_by_address_or_unambiguous_local_part():
    from mockservers.accounts import Account

    base = load_profile("rfc")
    profile = dataclasses.replace(base, accounts=(
        Account("ann@a.test", "s1"), Account("bob@a.test", "s2"), Account("bob@b.test", "s3"), Account("ann@a.test", "dup"),
    ))  # fmt: skip
    assert profile.find_account(" ANN@A.test ").secret == "s1"  # the first of a duplicate
    assert profile.find_account("ann") is None and profile.find_account("bob") is None  # ambiguous
    assert profile.find_account("bob@b.test").secret == "s3"
    assert profile.find_account("carol") is None and profile.find_account("") is None
    later = profile.with_accounts([Account("carol@a.test", "s4")])
    assert later.find_account("carol").secret == "s4" and profile.find_account("carol") is None
