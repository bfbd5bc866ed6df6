"""The validator: one table row per diagnostic, checked in English and Chinese.

Each row gives a persona, the lines already sent (replayed with that persona's own replies by
`build_session`), the line to check, and what the validator must say: the diagnostic id, its
severity, and the reply code the server will answer (None when it accepts). The corpus test
(tests/test_engine_corpus.py) holds the same predictions against the real servers.
"""

from __future__ import annotations

import dataclasses
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mailprotocol import codec as sasl
from mockservers.profile import load_profile
from simulator.engine.diagnostics import Diagnostic, diagnostic_ids, load_diagnostics
from simulator.engine.session import POP3Session, SMTPSession, replay
from simulator.engine.validate import (
    build_session,
    describe_state,
    expected_reply,
    fresh_session,
    predict,
    validate_line,
)

REPO = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")
HELO = "EHLO client.example.com"
B64 = sasl.b64encode_text
RFC_CHALLENGE = "<1896.697170952@mail.example.com>"  # what build_session's CRAM-MD5 challenge carries
POP3_STAMP = "<1896.697170952@mail.example.com>"  # what fresh_session's POP3 greeting carries


def persona(name: str, **policies: Any):
    profile = load_profile(name)
    if policies:
        profile = dataclasses.replace(profile, policies=dataclasses.replace(profile.policies, **policies))
    return profile


@dataclasses.dataclass(frozen=True)
class Case:
    """`line` sent after `after` on `profile`: `diagnostic` must be reported with `severity`; `code`
    is what predict() returns (None: the server accepts the line)."""

    profile: str
    after: tuple[str, ...]
    line: str
    diagnostic: str
    severity: str
    code: str | None
    protocol: str = "smtp"
    suggestion: str | None = None
    policies: tuple[tuple[str, Any], ...] = ()

    def id(self) -> str:
        return f"{self.profile}:{self.diagnostic}:{self.line[:30]}"


def C(profile: str, after: list[str], line: str, diagnostic: str, severity: str, code: str | None, **extra: Any) -> Case:
    if "policies" in extra:
        extra["policies"] = tuple(extra["policies"].items())
    return Case(profile, tuple(after), line, diagnostic, severity, code, **extra)


QQ_LOGIN = [HELO, "AUTH LOGIN", B64("learner@qq.com"), B64("abcdefghijklmnop")]
RFC_MAIL = [HELO, "MAIL FROM:<alice@example.com>"]
RFC_RCPT = RFC_MAIL + ["RCPT TO:<bob@example.com>"]
RFC_DATA = RFC_RCPT + ["DATA"]
POP3_LOGIN = ["USER alice@example.com", "PASS alice-secret"]

SMTP_CASES = [
    # --- unknown verbs, with the nearest known one
    C("rfc", [], "EHOL client.example.com", "unknown-verb", "error", "500", suggestion="EHLO client.example.com"),
    C("rfc", [HELO], "MAIK FROM:<alice@example.com>", "unknown-verb", "error", "500", suggestion="MAIL FROM:<alice@example.com>"),
    C("rfc", [HELO], "RCTP TO:<bob@example.com>", "unknown-verb", "error", "500", suggestion="RCPT TO:<bob@example.com>"),
    C("sina", [], "EHOL client.example.com", "unknown-verb", "error", "502"),
    C("rfc", [HELO], "FROBNICATE", "unknown-verb-no-guess", "error", "500"),
    C("rfc", [HELO], "MAILFROM:<alice@example.com>", "verb-glued", "error", "500", suggestion="MAIL FROM:<alice@example.com>"),
    C("rfc", [HELO], "MAIL\tFROM:<alice@example.com>", "verb-glued", "error", "500", suggestion="MAIL FROM:<alice@example.com>"),
    C("rfc", [HELO], "QUIT.", "verb-separator", "error", "500", suggestion="QUIT"),
    C("rfc", [HELO], "VRFY\tbob", "verb-separator", "error", "500", suggestion="VRFY bob"),
    C("rfc", [HELO], "USER alice", "pop3-command-in-smtp", "error", "500"),
    C("qq", [HELO], "ETRN example.com", "command-not-offered", "error", "500"),
    C("qq", [HELO], "BDAT 10 LAST", "command-not-offered", "error", "500"),
    C("rfc", [], "", "empty-line", "error", "500"),
    C("rfc", [], "  NOOP", "leading-space", "warning", None, suggestion="NOOP"),
    C("spot-codes", [HELO, "FOO", "BAR", "BAZ", "QUX"], "ZAP", "too-many-unknown", "warning", "500"),
    # --- missing or wrong arguments
    C("rfc", [], "HELO", "helo-syntax", "error", "501"),
    C("rfc", [], "EHLO two words", "helo-syntax", "error", "501"),
    C("postfix", [], "EHLO laptop", "helo-not-fqdn", "error", "504", suggestion="EHLO client.example.com",
      policies={"delay_reject": False}),
    # Postfix's smtpd_delay_reject = yes: the greeting is accepted, every RCPT TO is refused.
    C("postfix", [], "EHLO laptop", "helo-not-fqdn-delayed", "warning", None, suggestion="EHLO client.example.com"),
    C("postfix", ["EHLO laptop", "MAIL FROM:<alice@example.com>"], "RCPT TO:<bob@example.com>", "rcpt-helo-not-fqdn", "error", "504"),
    C("postfix", [HELO], "MAIL FROM:alice@example.com", "mail-missing-brackets", "info", None),
    C("gmail", [HELO], "MAIL FROM:learner@gmail.com", "mail-missing-brackets", "error", "555",
      policies={"require_tls_for_mail": False, "require_auth_for_mail": False}),
    C("rfc", RFC_RCPT + ["DATA"], "Subject: 你好", "data-8bit", "info", None),
    C("rfc", RFC_RCPT + ["DATA", "Subject: 你好", ""], ".", "data-8bit-refused", "error", "554", policies={"undeclared_8bit": "refuse"}),
    C("outlook", [], "EHLO laptop", "helo-not-fqdn", "error", "501"),
    C("rfc", [], "EHLO laptop", "helo-not-fqdn", "warning", None),
    C("rfc", [], "EHLO bad_host.example", "helo-bad-domain", "warning", None),
    C("rfc", [], "HELO client.example.com", "helo-no-extensions", "info", None),
    C("rfc", RFC_MAIL, HELO, "helo-resets-transaction", "info", None),
    C("rfc", [HELO], "QUIT now", "no-argument-expected", "error", "501", suggestion="QUIT"),
    C("rfc", RFC_RCPT, "DATA please", "no-argument-expected", "error", "501"),
    C("rfc", [HELO], "RSET all", "no-argument-expected", "error", "501"),
    C("rfc", [HELO], "HELP FOO", "help-unknown-topic", "error", "504"),
    C("rfc", [HELO], "TURN", "turn-obsolete", "error", "502"),
    C("rfc", [HELO], "VRFY", "vrfy-syntax", "error", "501"),
    C("rfc", [HELO], "VRFY bob@example.com", "vrfy-cannot", "info", None),
    C("postfix", [HELO], "VRFY nobody@example.com", "vrfy-unknown", "error", "550"),
    C("rfc", [HELO], "ETRN", "etrn-syntax", "error", "501"),
    C("rfc", RFC_MAIL, "ETRN example.com", "etrn-in-transaction", "error", "503"),
    C("rfc", [HELO], "ATRN", "atrn-refused", "error", "502"),
    C("rfc", RFC_MAIL, "QUIT", "quit-abandons-message", "info", None),
    # --- MAIL FROM: colon, brackets, addresses (error on strict personas, warning on QQ/Sina)
    C("rfc", [HELO], "MAIL FROM: <alice@example.com>", "mail-space-after-colon", "error", "501", suggestion="MAIL FROM:<alice@example.com>"),
    C("qq", QQ_LOGIN, "mail from: <learner@qq.com>", "mail-space-after-colon", "warning", None, suggestion="MAIL FROM:<learner@qq.com>"),
    C("sina", [], "MAIL FROM: service@sina.com", "mail-space-after-colon", "warning", None),
    C("sina", [], "MAIL FROM: service@sina.com", "mail-missing-brackets", "info", None),
    C("rfc", [HELO], "MAIL FROM:alice@example.com", "mail-missing-brackets", "error", "501", suggestion="MAIL FROM:<alice@example.com>"),
    C("rfc", [HELO], "MAIL FROM :<alice@example.com>", "mail-space-before-colon", "error", "501"),
    C("qq", QQ_LOGIN, "MAIL FROM :<learner@qq.com>", "mail-space-before-colon", "warning", None),
    C("rfc", [HELO], "MAIL <alice@example.com>", "mail-missing-keyword", "error", "501"),
    C("rfc", [HELO], "MAIL", "mail-missing-keyword", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:", "mail-empty-address", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com", "address-unclosed-bracket", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice>", "address-no-at", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<@example.com>", "source-route-malformed", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<a..b@example.com>", "address-bad-local-part", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@bad_domain>", "address-bad-domain", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<" + "a" * 70 + "@example.com>", "address-local-part-too-long", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com>SIZE=10", "parameters-not-separated", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> SIZE=1 SIZE=2", "parameter-malformed", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<@relay.example:alice@example.com>", "source-route", "warning", None),
    C("rfc", [HELO], "MAIL FROM:<>", "null-sender", "info", None),
    C("rfc", RFC_MAIL, "MAIL FROM:<alice@example.com>", "nested-mail", "error", "503", suggestion="RSET"),
    # --- ESMTP parameters: the server's own decisions (501 / 552 / 555)
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> SIZE=abc", "param-size-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> SIZE=99999999999", "param-size-exceeded", "error", "552"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> BODY=9BIT", "param-body-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> BODY=BINARYMIME", "param-body-binarymime", "error", "555"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> SMTPUTF8=yes", "param-smtputf8-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> RET=ALL", "param-ret-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> ENVID=a+b", "param-envid-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> AUTH=a+zz", "param-auth-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<alice@example.com> FOO=bar", "param-unknown", "error", "555"),
    C("sina", [], "MAIL FROM:<service@sina.com> RET=FULL", "param-not-advertised", "error", "555"),
    C("rfc", RFC_MAIL, "RCPT TO:<bob@example.com> NOTIFY=NEVER,SUCCESS", "param-notify-syntax", "error", "501"),
    C("rfc", RFC_MAIL, "RCPT TO:<bob@example.com> ORCPT=bad", "param-orcpt-syntax", "error", "501"),
    C("rfc", [HELO], "MAIL FROM:<用户@example.com>", "utf8-not-declared", "error", "553",
      suggestion="MAIL FROM:<用户@example.com> SMTPUTF8"),
    C("qq", QQ_LOGIN, "MAIL FROM:<用户@qq.com>", "utf8-not-supported", "error", "553"),
    C("rfc", RFC_MAIL, "RCPT TO:<用户@example.com>", "utf8-not-declared", "error", "553"),
    C("rfc", [HELO], "HELO 例子.example.com", "non-ascii-command", "warning", None),
    C("rfc", ["HELO client.example.com"], "MAIL FROM:<alice@example.com> SIZE=100", "parameters-after-helo", "warning", None),
    # --- order of commands
    C("rfc", [HELO], "RCPT TO:<bob@example.com>", "rcpt-before-mail", "error", "503"),
    C("rfc", [HELO], "RCPT TO: <bob@example.com>", "rcpt-before-mail", "error", "503"),
    C("rfc", [HELO], "DATA", "data-before-mail", "error", "503"),
    C("rfc", RFC_MAIL, "DATA", "data-before-rcpt", "error", "503"),
    C("rfc", RFC_MAIL + ["RCPT TO:<nobody@example.com>"], "DATA", "data-no-valid-recipients", "error", "554"),
    C("rfc", [], "MAIL FROM:<alice@example.com>", "need-helo", "error", "503", suggestion="EHLO client.example.com"),
    C("qq", [], "AUTH LOGIN", "need-helo", "error", "503"),
    C("sina", [], "MAIL FROM:<service@sina.com>", "need-helo", "warning", None),
    C("sina", [], "AUTH LOGIN", "need-helo", "warning", None),
    C("rfc", [HELO, "STARTTLS"], "MAIL FROM:<alice@example.com>", "need-helo", "error", "503"),
    C("rfc", RFC_RCPT, "RCPT TO:<bob@example.com>", "rcpt-duplicate", "info", None),
    C("rfc", RFC_MAIL, "RCPT TO:<nobody@example.com>", "rcpt-unknown-user", "error", "550"),
    C("qq", QQ_LOGIN + ["MAIL FROM:<learner@qq.com>"], "RCPT TO:<nobody@qq.com>", "rcpt-unknown-user", "error", "550"),
    C("rfc", RFC_MAIL, "RCPT TO:<someone@remote.example>", "rcpt-relay-denied", "error", "554"),
    C("rfc", RFC_MAIL, "RCPT TO:<postmaster@example.com>", "rcpt-postmaster", "info", None),
    C("rfc", RFC_MAIL, "RCPT TO:<Postmaster>", "rcpt-postmaster", "info", None),
    C("rfc", RFC_MAIL, "RCPT TO:<Postmaster> NOTIFY=NEVER", "rcpt-postmaster", "info", None),  # the core's parse: not a relay
    C("rfc", RFC_MAIL, "RCPT TO:<>", "rcpt-empty-address", "error", "501"),
    C("postfix", [HELO, "MAIL FROM:<alice@example.com>"] + [f"RCPT TO:<{u}@example.com>" for u in ("alice", "bob", "carol", "alice", "bob")],
      "RCPT TO:<carol@example.com>", "rcpt-duplicate", "info", None),
    C("rfc", RFC_MAIL, "RCPT TO:<bob@example.com>", "greylisted", "error", "450", policies={"greylist_delay": 60.0}),
    C("rfc", RFC_MAIL, "RCPT TO:<carol@example.com>", "too-many-recipients", "error", "452",
      policies={"max_recipients": 0}),
    C("rfc", RFC_RCPT, "DATA", "data-start", "info", None),
    C("rfc", RFC_RCPT, "BDAT abc", "bdat-syntax", "error", "501"),
    C("rfc", [HELO], "BDAT 0 LAST", "bdat-before-mail", "error", "503"),
    C("rfc", RFC_MAIL, "BDAT 10", "bdat-before-rcpt", "error", "503"),
    C("rfc", RFC_RCPT, "BDAT 10 LAST", "bdat-chunk", "info", None),
    # --- TLS and AUTH under this persona's policies
    C("gmail", [HELO], "AUTH LOGIN", "auth-needs-tls", "error", "530", suggestion="STARTTLS"),
    C("outlook", [HELO], "AUTH LOGIN", "auth-needs-tls", "error", "530"),
    C("rfc", [HELO], "AUTH LOGIN", "auth-needs-tls", "error", "530", policies={"require_tls_for_auth": True}),
    C("rfc", [HELO], "AUTH PLAIN", "auth-mechanism-needs-tls", "error", "538", policies={"mechanisms_requiring_tls": ("PLAIN",)}),
    C("gmail", [HELO], "MAIL FROM:<learner@gmail.com>", "need-auth", "error", "530"),
    C("qq", [HELO], "MAIL FROM:<learner@qq.com>", "need-auth", "error", "503"),
    C("163", [HELO], "MAIL FROM:<learner@163.com>", "need-auth", "error", "553"),
    C("outlook", [HELO], "MAIL FROM:<learner@contoso.com>", "need-auth", "error", "530"),
    C("rfc", [HELO], "AUTH FOO", "auth-mechanism-not-offered", "error", "504", suggestion="AUTH PLAIN"),
    C("qq", [HELO], "AUTH CRAM-MD5", "auth-mechanism-not-offered", "error", "504"),
    C("gmail", [HELO, "STARTTLS", HELO], "AUTH XOAUTH2", "auth-mechanism-unsupported", "error", "504", suggestion="AUTH LOGIN"),
    C("rfc", [HELO], "AUTH", "auth-syntax", "error", "501"),
    C("rfc", [HELO, "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret")], "AUTH LOGIN", "auth-already", "error", "503"),
    C("rfc", RFC_MAIL, "AUTH LOGIN", "auth-in-transaction", "error", "503", suggestion="RSET"),
    C("rfc", [HELO], "AUTH CRAM-MD5 abc", "auth-cram-initial", "error", "501"),
    C("rfc", ["HELO client.example.com"], "AUTH LOGIN", "auth-after-helo", "warning", None),
    C("rfc", [HELO], "AUTH LOGIN", "auth-cleartext", "info", None),
    C("qq", QQ_LOGIN, "MAIL FROM:<friend@qq.com>", "sender-not-owned", "error", "501", suggestion="MAIL FROM:<learner@qq.com>"),
    C("163", [HELO, "AUTH PLAIN " + sasl.plain_payload("learner@163.com", "WXYZABCDEFGHIJKL")], "MAIL FROM:<friend@163.com>",
      "sender-not-owned", "error", "553"),
    C("163", [HELO, "AUTH PLAIN " + sasl.plain_payload("nosmtp@163.com", "STUVWXYZABCDEFGH")], "MAIL FROM:<nosmtp@163.com>",
      "scripted-fault", "error", "550"),
    C("rfc", [HELO], "STARTTLS now", "starttls-syntax", "error", "501"),
    C("rfc", [HELO, "STARTTLS", HELO], "STARTTLS", "starttls-already", "error", "554"),
    C("rfc", [HELO], "STARTTLS", "starttls-telnet", "info", None),
    C("rfc", [HELO] + ["AUTH PLAIN " + sasl.plain_payload("alice@example.com", "nope")] * 3, "AUTH PLAIN x",
      "auth-refused-after-failures", "error", "451", policies={"max_auth_failures": 3, "auth_failure_action": "refuse"}),
    # --- the AUTH exchange: base64 lines while the server waits
    C("rfc", [HELO, "AUTH LOGIN"], "alice@example.com", "auth-not-base64", "error", "501", suggestion=B64("alice@example.com")),
    C("qq", [HELO, "AUTH LOGIN", B64("learner@qq.com")], "abcdefghijklmnop!", "auth-not-base64", "error", "501"),
    C("rfc", [HELO, "AUTH LOGIN"], B64("alice@example.com"), "auth-decoded", "info", None),
    C("rfc", [HELO, "AUTH LOGIN"], B64("nobody@example.com"), "auth-unknown-user-later", "warning", None),
    C("rfc", [HELO, "AUTH LOGIN"], B64("alice\x01@example.com"), "auth-decodes-to-odd", "warning", None),
    C("rfc", [HELO, "AUTH LOGIN"], B64(B64("alice@example.com")), "auth-double-base64", "warning", None),
    C("rfc", [HELO, "AUTH LOGIN"], "QUIT", "auth-command-typed", "warning", None),
    C("rfc", [HELO, "AUTH LOGIN"], "", "auth-empty-user", "error", "501"),
    C("rfc", [HELO, "AUTH LOGIN"], "//79", "auth-not-utf8", "error", "501"),
    C("rfc", [HELO, "AUTH LOGIN"], "*", "auth-cancel", "info", "501"),
    C("rfc", [HELO, "AUTH LOGIN", B64("alice@example.com")], B64("wrong"), "auth-wrong-secret", "error", "535"),
    C("rfc", [HELO, "AUTH LOGIN", B64("alice@example.com")], B64("alice@example.com"), "auth-password-is-user", "warning", "535"),
    C("rfc", [HELO, "AUTH LOGIN", B64("nobody@example.com")], B64("x"), "auth-unknown-user", "error", "535"),
    C("qq", [HELO, "AUTH LOGIN", B64("learner@qq.com")], B64("password123"), "auth-web-password", "error", "535"),
    C("rfc", [HELO, "AUTH PLAIN"], B64("alice@example.com"), "auth-plain-no-nul", "error", "501"),
    C("rfc", [HELO], "AUTH PLAIN " + B64("alice@example.com\0alice-secret"), "auth-plain-no-nul", "error", "501"),
    C("rfc", [HELO], "AUTH PLAIN " + B64("\0\0alice-secret"), "auth-plain-empty-user", "error", "501"),
    C("rfc", [HELO], "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret", authzid="bob@example.com"),
      "auth-plain-authzid", "error", "501"),
    C("rfc", [HELO, "AUTH PLAIN"], "alice@example.com", "auth-not-base64", "error", "501"),
    C("rfc", [HELO, "AUTH CRAM-MD5"], B64("tim"), "auth-cram-format", "error", "501"),
    C("rfc", [HELO, "AUTH CRAM-MD5"], sasl.cram_md5_response("tim@example.com", "wrong", RFC_CHALLENGE), "auth-wrong-secret", "error", "535"),
    C("rfc", [HELO], "AUTH LOGIN " + "A" * 20000, "line-too-long", "error", "500"),
    C("rfc", [HELO, "AUTH LOGIN"], "A" * 20000, "line-too-long", "error", "500"),
    # --- line lengths
    C("rfc", [HELO], "NOOP " + "x" * 600, "line-too-long", "error", "500"),
    C("rfc", [HELO], "NOOP \0", "nul-character", "error", "500"),
    # --- DATA text
    C("rfc", RFC_DATA + ["Subject: hi"], "hello there", "data-header-no-colon", "warning", None, suggestion=""),
    C("rfc", RFC_DATA, "Subject : hi", "data-header-space-before-colon", "warning", None, suggestion="Subject: hi"),
    C("rfc", RFC_DATA, " folded", "data-continuation-first", "warning", None),
    C("rfc", RFC_DATA + ["Subject: a"], "Subject: b", "data-header-repeated", "warning", None),
    C("rfc", RFC_DATA + ["Subject: hi"], "", "data-blank-line", "info", None),
    C("rfc", RFC_DATA, "", "data-no-headers", "warning", None),
    C("rfc", RFC_DATA + ["Subject: hi", ""], ".hidden", "data-leading-dot", "warning", None, suggestion="..hidden"),
    C("rfc", RFC_DATA + ["Subject: hi", ""], "..shown", "data-dot-stuffed", "info", None),
    C("rfc", RFC_DATA + ["Subject: hi", ""], "x" * 1100, "data-line-too-long", "warning", None),
    C("rfc", RFC_DATA + ["Subject: hi", ""], "中文正文", "data-8bit", "info", None),
    C("rfc", RFC_DATA + ["Subject: hi", ""], "QUIT", "data-looks-like-command", "warning", None),
    C("rfc", RFC_DATA + ["Subject: hi", "", "body"], ".", "data-end", "info", None),
    C("rfc", RFC_DATA + ["Subject: hi", "", "body"], ".", "data-missing-headers", "warning", None),
    C("rfc", RFC_DATA, ".", "data-empty-message", "warning", None),
    C("rfc", RFC_DATA + ["Subject: hi", ""], "x" * 200, "data-size-over", "warning", None, policies={"max_message_size": 100}),
    C("rfc", RFC_DATA + ["Subject: hi", "", "x" * 200], ".", "data-size-exceeded", "error", "552", policies={"max_message_size": 100}),
]

POP3_CASES = [
    C("rfc", [], "STAT", "pop3-needs-login", "error", "-ERR", protocol="pop3", suggestion="USER alice@example.com"),
    C("rfc", [], "RETR 1", "pop3-needs-login", "error", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "USER bob@example.com", "pop3-already-logged-in", "error", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "STLS", "pop3-already-logged-in", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "STAY", "unknown-verb", "error", "-ERR", protocol="pop3", suggestion="STAT"),
    C("rfc", [], "RETRV 1", "unknown-verb", "error", "-ERR", protocol="pop3", suggestion="RETR 1"),
    C("rfc", [], "HELO client.example.com", "smtp-command-in-pop3", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "", "empty-line", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "USER " + "x" * 300, "line-too-long", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "USER " + "x" * 50, "pop3-argument-too-long", "warning", "-ERR", protocol="pop3"),
    C("rfc", [], "USER", "user-missing-name", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "USER nobody@example.com", "user-unknown", "error", "-ERR", protocol="pop3"),
    C("qq", [], "USER nobody@qq.com", "user-unknown-hidden", "warning", None, protocol="pop3"),
    C("qq", ["USER nobody@qq.com"], "PASS whatever", "pass-unknown-user", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "PASS alice-secret", "pass-without-user", "error", "-ERR", protocol="pop3"),
    C("rfc", ["USER alice@example.com"], "PASS", "pass-missing", "error", "-ERR", protocol="pop3"),
    C("rfc", ["USER alice@example.com"], "PASS wrong", "auth-wrong-secret", "error", "-ERR", protocol="pop3"),
    C("qq", ["USER learner@qq.com"], "PASS password123", "auth-web-password", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "USER alice@example.com", "pop3-cleartext", "info", None, protocol="pop3"),
    C("gmail", [], "USER learner@gmail.com", "pop3-needs-tls", "error", "-ERR", protocol="pop3"),
    C("gmail", [], "STLS", "stls-not-offered", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "STLS now", "no-argument-expected", "error", "-ERR", protocol="pop3"),
    C("rfc", ["STLS"], "STLS", "stls-already", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "APOP mrose tanstaaf", "apop-digest-length", "error", "-ERR", protocol="pop3",
      suggestion="APOP mrose " + sasl.apop_digest(POP3_STAMP, "tanstaaf")),
    C("rfc", [], "APOP mrose " + "g" * 32, "apop-digest-not-hex", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "APOP mrose", "apop-syntax", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "APOP mrose " + sasl.apop_digest(POP3_STAMP, "wrong"), "auth-wrong-secret", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "APOP mrose " + sasl.apop_digest(POP3_STAMP, "tanstaaf").upper(), "apop-digest-uppercase", "warning", None, protocol="pop3"),
    C("qq", [], "APOP learner@qq.com " + "a" * 32, "apop-unavailable", "error", "-ERR", protocol="pop3"),
    C("rfc", [], "AUTH", "pop3-auth-list", "info", None, protocol="pop3"),
    C("rfc", [], "AUTH FOO", "pop3-auth-mechanism", "error", "-ERR", protocol="pop3", suggestion="AUTH PLAIN"),
    C("rfc", ["AUTH LOGIN"], "alice@example.com", "auth-not-base64", "error", "-ERR", protocol="pop3"),
    C("rfc", ["AUTH PLAIN"], B64("alice@example.com"), "auth-plain-no-nul", "error", "-ERR", protocol="pop3"),
    C("rfc", ["AUTH LOGIN"], "*", "auth-cancel", "info", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "RETR 0", "message-number-zero", "error", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "RETR x", "message-number-invalid", "error", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "RETR", "message-number-invalid", "error", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "RETR 1", "message-count-unknown", "info", None, protocol="pop3", suggestion="STAT"),
    C("rfc", POP3_LOGIN, "TOP 1", "top-syntax", "error", "-ERR", protocol="pop3", suggestion="TOP 1 10"),
    C("rfc", POP3_LOGIN, "STAT all", "no-argument-expected", "error", "-ERR", protocol="pop3"),
    C("rfc", POP3_LOGIN, "NOOP now", "no-argument-ignored", "warning", None, protocol="pop3"),
    C("rfc", POP3_LOGIN, "DELE 1", "dele-marks-only", "info", None, protocol="pop3"),
]

CASES = SMTP_CASES + POP3_CASES


def session_for(case: Case, profile: Any) -> SMTPSession | POP3Session:
    return build_session(list(case.after), protocol=case.protocol, profile=profile)


@pytest.mark.parametrize("case", CASES, ids=[c.id() for c in CASES])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_diagnostic(case: Case, lang: str) -> None:
    profile = persona(case.profile, **dict(case.policies))
    session = session_for(case, profile)
    diagnostics = validate_line(case.line, session=session, profile=profile, lang=lang)
    found = [d for d in diagnostics if d.id == case.diagnostic]
    assert found, f"{case.diagnostic} not among {[d.id for d in diagnostics]}"
    diagnostic = found[0]
    assert diagnostic.severity == case.severity
    assert diagnostic.message and "{" not in diagnostic.message
    if lang == "zh":
        assert CJK.search(diagnostic.message), diagnostic.message
    else:
        assert not CJK.search(diagnostic.message.replace(case.line, "")), diagnostic.message
    assert diagnostic.rfc is None or diagnostic.rfc.startswith("RFC")
    if case.suggestion is not None:
        assert diagnostic.suggestion == case.suggestion
    if case.severity == "error":
        assert diagnostic.reply, "an error carries the reply the server will send"
    assert predict(case.line, session, profile) == case.code
    assert diagnostic.render_text().startswith({"en": {"error": "error", "warning": "warning", "info": "note"},
                                                "zh": {"error": "错误", "warning": "警告", "info": "提示"}}[lang][case.severity])


def test_every_diagnostic_id_is_exercised() -> None:
    """The table covers (nearly) every diagnostic the validator can say."""
    covered = {case.diagnostic for case in CASES}
    rare = {
        # reachable only in states the table does not build (an open TLS handshake, reversed roles,
        # fault scripts with a drop or a delay ...): tested in the small tests below
        "session-closed", "session-reversed", "tls-handshake-pending", "spoke-before-greeting", "wait-for-reply",
        "scripted-drop", "scripted-delay", "atrn-needs-auth", "atrn-no-mail", "auth-not-offered", "bdat-octets",
        "bdat-after-failure", "data-after-bdat", "data-bare-line-break", "path-too-long", "vrfy-disabled",
        "quit-applies-deletions", "message-number-too-high", "message-deleted", "pop3-login-delay",
        "apop-no-timestamp-seen", "rcpt-relay", "command-not-offered", "rcpt-missing-keyword",
        "rcpt-space-after-colon", "rcpt-space-before-colon", "rcpt-missing-brackets",
    }
    missing = set(diagnostic_ids()) - covered - rare
    assert not missing, sorted(missing)


# --- states the table cannot build with build_session ---------------------------------------------


def rfc_smtp(*exchanges: tuple[str, str]) -> SMTPSession:
    transcript = [("S", "220 mail.example.com ESMTP Postfix")]
    for client, server in exchanges:
        transcript.append(("C", client))
        if server:
            transcript += [("S", line) for line in server.split("\n")]
    return replay(SMTPSession(), transcript)  # type: ignore[return-value]


def ids(line: str, session: Any, profile: Any = "rfc", lang: str = "en") -> list[str]:
    return [d.id for d in validate_line(line, session=session, profile=profile, lang=lang)]


def test_session_states() -> None:
    closed = rfc_smtp(("QUIT", "221 2.0.0 Bye"))
    assert ids("NOOP", closed) == ["session-closed"]
    pending_tls = rfc_smtp((HELO, "250 mail.example.com"), ("STARTTLS", "220 2.0.0 Ready to start TLS"))
    assert ids("EHLO x.example.com", pending_tls) == ["tls-handshake-pending"]
    before_greeting = SMTPSession()
    assert "spoke-before-greeting" in ids(HELO, before_greeting)
    waiting = rfc_smtp((HELO, "250 mail.example.com"), ("NOOP", ""))
    assert waiting.pending == ("NOOP",)
    assert ids("NOOP", waiting)[0] == "wait-for-reply"


def test_rcpt_variants_share_the_mail_sentences() -> None:
    session = build_session(RFC_MAIL)
    assert "rcpt-space-after-colon" in ids("RCPT TO: <bob@example.com>", session)
    assert "rcpt-space-before-colon" in ids("RCPT TO :<bob@example.com>", session)
    assert "rcpt-missing-brackets" in ids("RCPT TO:bob@example.com", session)
    assert "rcpt-missing-keyword" in ids("RCPT <bob@example.com>", session)
    relay = build_session([HELO, "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"), "MAIL FROM:<alice@example.com>"])
    assert "rcpt-relay" in ids("RCPT TO:<someone@remote.example>", relay)
    assert predict("RCPT TO:<someone@remote.example>", relay, "rfc") is None


def test_pop3_message_numbers_from_stat() -> None:
    transcript = [
        ("S", "+OK POP3 server ready <1.2@mail.example.com>"),
        ("C", "USER alice@example.com"), ("S", "+OK alice@example.com is a real hoopy frood"),
        ("C", "PASS alice-secret"), ("S", "+OK alice@example.com's maildrop has 2 messages (320 octets)"),
    ]
    session = replay(POP3Session(), transcript)
    assert predict("RETR 2", session, "rfc") is None  # the count comes from the login reply
    assert predict("RETR 3", session, "rfc") == "-ERR"
    assert "message-number-too-high" in ids("RETR 3", session)
    session.sent("DELE 1")
    session.received("+OK message 1 deleted")
    assert "message-deleted" in ids("RETR 1", session)
    assert predict("RETR 1", session, "rfc") == "-ERR"
    assert "quit-applies-deletions" in ids("QUIT", session)
    quiet = replay(POP3Session(), [("S", "+OK Dovecot ready."), ("C", "USER alice@example.com"), ("S", "+OK"),
                                   ("C", "PASS alice-secret"), ("S", "+OK Logged in."), ("C", "STAT"), ("S", "+OK 2 320")])
    assert predict("LIST 3", quiet, "postfix") == "-ERR"
    assert predict("LIST 2", quiet, "postfix") is None


def test_bdat_states() -> None:
    session = build_session(RFC_RCPT + ["BDAT 5"])
    assert ids("abc", session) == ["bdat-octets"]
    failed = rfc_smtp((HELO, "250 mail.example.com\n250 CHUNKING"), ("MAIL FROM:<alice@example.com>", "250 2.1.0 Ok"),
                      ("RCPT TO:<bob@example.com>", "250 2.1.5 Ok"), ("BDAT 0", "552 5.3.4 Message size exceeds fixed limit"))
    assert "bdat-after-failure" in ids("BDAT 1 LAST", failed)
    used = rfc_smtp((HELO, "250 mail.example.com\n250 CHUNKING"), ("MAIL FROM:<alice@example.com>", "250 2.1.0 Ok"),
                    ("RCPT TO:<bob@example.com>", "250 2.1.5 Ok"), ("BDAT 0", "250 2.0.0 Ok: 0 octets received"))
    assert "data-after-bdat" in ids("DATA", used)
    data = build_session(RFC_DATA)
    assert "data-bare-line-break" in ids("a\rb", data)


def test_policy_dependent_diagnostics() -> None:
    disabled = persona("rfc", vrfy="disabled")
    assert predict("VRFY bob", build_session([HELO], profile=disabled), disabled) == "502"
    assert "vrfy-disabled" in ids("VRFY bob", build_session([HELO], profile=disabled), disabled)
    atrn = persona("rfc", atrn=True)
    assert "atrn-needs-auth" in ids("ATRN", build_session([HELO], profile=atrn), atrn)
    logged = build_session([HELO, "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret")], profile=atrn)
    assert "atrn-no-mail" in ids("ATRN", logged, atrn)
    no_auth = dataclasses.replace(load_profile("rfc"), smtp_capabilities=tuple(
        c for c in load_profile("rfc").smtp_capabilities if c.keyword != "AUTH"))
    assert "auth-not-offered" in ids("AUTH LOGIN", build_session([HELO], profile=no_auth), no_auth)
    assert "command-not-offered" in ids("ETRN example.com", build_session([HELO], profile="qq"), "qq")
    long_path = "MAIL FROM:<" + "a" * 60 + "@" + ".".join(["b" * 60] * 4) + ".com>"
    assert "path-too-long" in ids(long_path, build_session([HELO]))
    gmail = fresh_session("pop3", "gmail")
    gmail.tls_active = True  # POP3S, port 995
    gmail.sent("USER learner@gmail.com")
    gmail.received("+OK send PASS")
    assert "pop3-login-delay" in ids("PASS abcdefghijklmnop", gmail, "gmail")


def test_fault_scripts_are_predicted() -> None:
    from mailprotocol.faults import rule_from_spec

    base = load_profile("rfc")
    second_rcpt = base.with_faults([rule_from_spec("RCPT#2 452 4.5.3 Too many recipients", 0)])
    session = build_session(RFC_RCPT, profile=second_rcpt)
    assert predict("RCPT TO:<bob@example.com>", session, second_rcpt) == "452"
    dropped = base.with_faults([rule_from_spec("QUIT drop", 0)])
    assert "scripted-drop" in ids("QUIT", build_session([HELO], profile=dropped), dropped)
    slow = base.with_faults([rule_from_spec("NOOP delay=2.5", 0)])
    assert "scripted-delay" in ids("NOOP", build_session([HELO], profile=slow), slow)
    first_only = base.with_faults([rule_from_spec("NOOP#1 421 4.3.2 bye", 0)])
    after_one = build_session([HELO, "RSET"], profile=first_only)
    assert predict("NOOP", after_one, first_only) == "421"
    after_two = build_session([HELO, "NOOP"], profile=first_only)
    assert after_two.closed


def test_apop_without_a_known_timestamp() -> None:
    session = replay(POP3Session(), [("S", "+OK POP3 server ready")])
    assert "apop-no-timestamp-seen" in ids("APOP mrose " + "a" * 32, session)


def test_roles_reversed() -> None:
    session = rfc_smtp((HELO, "250 mail.example.com"), ("ATRN", "250 OK now reversing the connection"))
    assert ids("NOOP", session) == ["session-reversed"]


# --- the API around validate_line --------------------------------------------------------------------


def test_predict_without_a_session_checks_right_after_the_greeting() -> None:
    assert predict("MAIL FROM:<alice@example.com>", profile="rfc") == "503"
    assert predict("MAIL FROM:<service@sina.com>", profile="sina") is None
    assert predict("STAT", profile="rfc", protocol="pop3") == "-ERR"
    assert validate_line("EHLO client.example.com", protocol="smtp", profile="rfc", lang="en") == []


def test_validate_line_does_not_change_the_session() -> None:
    session = build_session(RFC_MAIL)
    before = (session.transcript[:], session.state, session.pending)
    validate_line("RCPT TO:<bob@example.com>", session=session, profile="rfc")
    assert (session.transcript, session.state, session.pending) == before


def test_pipelined_commands_are_assumed_to_succeed() -> None:
    session = build_session([HELO])
    session.sent("MAIL FROM:<alice@example.com>")  # pipelined, no reply yet (PIPELINING offered)
    assert predict("RCPT TO:<bob@example.com>", session, "rfc") is None
    assert "wait-for-reply" not in ids("RCPT TO:<bob@example.com>", session)


def test_build_session_follows_the_persona() -> None:
    session = build_session([HELO, "STARTTLS", HELO, "AUTH LOGIN", B64("learner@gmail.com"), B64("abcdefghijklmnop")], profile="gmail")
    assert session.tls_active and session.authenticated
    assert session.next_commands()[:1] == ["MAIL"]
    refused = build_session([HELO, "MAIL FROM: <alice@example.com>"])
    assert refused.mail_from is None  # the 501 was replayed, not a success
    assert "ready" in describe_state(refused, "en")
    assert "现在可以发送" in describe_state(refused, "zh")
    pop3 = build_session(POP3_LOGIN, protocol="pop3")
    assert pop3.logged_in
    assert expected_reply("STAT", pop3, "rfc")[0].startswith("+OK")
    assert expected_reply("RCPT TO:<bob@example.com>", build_session([HELO]), "rfc") == ["503 5.5.1 Error: need MAIL command"]


def test_fresh_sessions_carry_the_greeting() -> None:
    assert fresh_session("smtp", "qq").greeting.code == "220"  # type: ignore[union-attr]
    assert fresh_session("pop3", "rfc").apop_timestamp == POP3_STAMP


def test_diagnostic_as_dict_and_render() -> None:
    [diagnostic] = [d for d in validate_line("RCPT TO:<bob@example.com>", session=build_session([HELO]), profile="rfc") if d.is_error]
    data = diagnostic.as_dict()
    assert data["id"] == "rcpt-before-mail" and data["code"] == "503" and data["reply"] == ["503 5.5.1 Error: need MAIL command"]
    text = diagnostic.render_text()
    assert "RFC 5321 4.1.4" in text and "503 5.5.1 Error: need MAIL command" in text
    assert isinstance(diagnostic, Diagnostic)


# --- the knowledge file ----------------------------------------------------------------------------------


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_entry_is_bilingual_with_the_same_placeholders() -> None:
    data = load_diagnostics()
    assert len(data["diagnostics"]) > 150
    for key, entry in data["diagnostics"].items():
        message = entry["message"]
        assert message.get("en") and message.get("zh"), key
        assert CJK.search(message["zh"]), key
        assert not CJK.search(message["en"]), key
        assert _fields(message["en"]) == _fields(message["zh"]), key
        assert "rfc" in entry, key
    for table in ("labels", "secret_kinds"):
        for key, entry in data[table].items():
            assert entry.get("en") and entry.get("zh"), key
            assert CJK.search(entry["zh"]), key


def test_every_id_the_validator_uses_has_an_entry() -> None:
    engine = REPO / "simulator" / "engine"
    source = "\n".join((engine / name).read_text(encoding="utf-8")
                       for name in ("checks.py", "smtp_checks.py", "pop3_checks.py", "data_checks.py", "validate.py"))
    used = set(re.findall(r'\.add\(\s*"([a-z0-9-]+)"', source))
    used |= set(re.findall(r'(?:diagnostic|"error", "[a-z_]+", )"((?:auth|address)-[a-z0-9-]+)"', source))
    used |= set(re.findall(r'return "((?:auth|address)-[a-z0-9-]+)"', source))
    used |= set(re.findall(r'^\s+"[A-Za-z0-9 _-]+": \("([a-z0-9-]+)", ', source, re.MULTILINE))  # reason tables
    used |= set(re.findall(r'\.refuse\(\s*"([a-z0-9-]+)"', source))
    # `auth-{problem}` / `auth-{reason}`: every SASL problem and login refusal the core can name
    core = (REPO / "mailprotocol" / "sasl.py").read_text(encoding="utf-8") + (REPO / "mailprotocol" / "credentials.py").read_text(encoding="utf-8")
    used |= {f"auth-{name}" for name in re.findall(r'(?:problem=|_malformed\(|Verdict\(False, |return )"([a-z0-9-]+)"', core)}
    for template in re.findall(r'\.add\(\s*f"([a-z0-9{}._()-]+)"', source):
        if "{low}" in template:
            used |= {template.replace("{low}", verb) for verb in ("mail", "rcpt")}
        elif "{parameter.lower()}" in template:
            used |= {template.replace("{parameter.lower()}", p) for p in ("size", "body", "smtputf8", "ret", "envid", "auth", "notify", "orcpt")}
    assert len(used) > 100
    assert used - set(diagnostic_ids()) == set()


def test_every_address_problem_the_core_names_has_a_diagnostic() -> None:
    """The grammar's typed problems map to diagnostics by table: none is left without one."""
    from mailprotocol.addresses import AddressProblem, MailboxProblem
    from simulator.engine.smtp_checks import _ADDRESS_PROBLEMS, _MAILBOX_PROBLEMS

    assert set(_ADDRESS_PROBLEMS) | {AddressProblem.BAD_MAILBOX} == set(AddressProblem)
    assert set(_MAILBOX_PROBLEMS) == set(MailboxProblem)
    ids = {name.format(verb=verb) for name in _ADDRESS_PROBLEMS.values() for verb in ("mail", "rcpt")}
    assert ids | set(_MAILBOX_PROBLEMS.values()) <= set(diagnostic_ids())


def test_validator_imports_no_twisted() -> None:
    code = (
        "import sys, simulator.engine.validate;"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'textual'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == ""
