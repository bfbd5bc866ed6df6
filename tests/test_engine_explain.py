"""Parsing replies and explaining them, in both languages, including garbage."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import AFTER_CONNECT, AFTER_END_OF_DATA, explain_reply
from simulator.engine.replies import (
    parse_pop3_reply,
    parse_smtp_line,
    parse_smtp_reply,
    split_smtp_replies,
)

CJK = re.compile(r"[\u4e00-\u9fff]")

# --- reply parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "sep", "enhanced", "message", "problems"),
    [
        ("250 2.1.0 Ok", "250", " ", "2.1.0", "Ok", ()),
        ("250-PIPELINING", "250", "-", None, "PIPELINING", ()),
        ("250", "250", "", None, "", ()),
        ("354  Go ahead abc - gsmtp", "354", " ", None, " Go ahead abc - gsmtp", ()),
        ("550 5.1.1 <x@example.com>: Recipient address rejected", "550", " ", "5.1.1", "<x@example.com>: Recipient address rejected", ()),
        ("250 5.1.0 odd", "250", " ", None, "5.1.0 odd", ("enhanced_class_mismatch",)),
        ("235 #2.0.0 OK Authenticated", "235", " ", "2.0.0", "OK Authenticated", ("enhanced_hash_prefix",)),
        ("250 192.0.2.1 is you", "250", " ", None, "192.0.2.1 is you", ()),
        ("550 5.7.139 Authentication unsuccessful", "550", " ", "5.7.139", "Authentication unsuccessful", ()),
        ("650 nope", "650", " ", None, "nope", ("bad_first_digit",)),
        ("270 nope", "270", " ", None, "nope", ("bad_second_digit",)),
        ("250OK", "250", "", None, "OK", ("no_separator",)),
        ("hello", None, "", None, "hello", ("not_a_reply",)),
    ],
)
def test_parse_smtp_line(line, code, sep, enhanced, message, problems) -> None:
    parsed = parse_smtp_line(line)
    assert parsed.code == code
    assert parsed.separator == sep
    assert (str(parsed.enhanced) if parsed.enhanced else None) == enhanced
    assert parsed.message == message
    assert parsed.problems == problems


def test_multiline_reply_rules() -> None:
    good = parse_smtp_reply("250-a\r\n250-b\r\n250 c\r\n")
    assert good.complete and good.multiline and good.problems == () and good.texts == ["a", "b", "c"]
    assert parse_smtp_reply(["250-a", "251 b"]).problems == ("mixed_codes",)
    assert parse_smtp_reply(["250 a", "250 b"]).problems == ("early_last_line",)
    open_ended = parse_smtp_reply(["250-a", "250-b"])
    assert not open_ended.complete and "unterminated" in open_ended.problems
    assert parse_smtp_reply("").problems == ("empty",)


def test_split_pipelined_replies() -> None:
    replies, rest = split_smtp_replies(["250 2.1.0 Ok", "250 2.1.5 Ok", "354 go", "250-more", "250-to"])
    assert [r.code for r in replies] == ["250", "250", "354"]
    assert rest == ["250-more", "250-to"]
    replies, rest = split_smtp_replies(["250-a", "garbage", "250 b"])
    assert [r.valid for r in replies] == [True, False, True] and rest == []


@pytest.mark.parametrize(
    ("lines", "multiline", "kind", "code", "text", "data", "problems"),
    [
        (["+OK 2 320"], False, "ok", None, "2 320", (), ()),
        (["-ERR [IN-USE] Unable to lock maildrop"], False, "err", "IN-USE", "Unable to lock maildrop", (), ()),
        (["-ERR [SYS/TEMP] try later"], False, "err", "SYS/TEMP", "try later", (), ()),
        (["+ "], False, "continuation", None, "", (), ()),
        (["+ PDE4OTY+"], False, "continuation", None, "PDE4OTY+", (), ()),
        (["+OK", "1 120", "..hidden", "."], True, "ok", None, "", ("1 120", ".hidden"), ()),
        (["+OK", "1 120"], True, "ok", None, "", ("1 120",), ("unterminated",)),
        (["+ok fine"], False, "ok", None, "fine", (), ("indicator_case",)),
        (["+OKAY"], False, "invalid", None, "+OKAY", (), ("not_a_pop3_reply",)),
        (["-ERR bad", "extra"], None, "err", None, "bad", (), ("extra_lines",)),
    ],
)
def test_parse_pop3(lines, multiline, kind, code, text, data, problems) -> None:
    reply = parse_pop3_reply(lines, multiline=multiline)
    assert (reply.kind, reply.response_code, reply.text, reply.data, reply.problems) == (kind, code, text, data, problems)


# --- explanations, table-driven --------------------------------------------------------------


@dataclass
class Case:
    lines: list[str]
    protocol: str = "smtp"
    after: str | None = None
    persona: str | None = None
    code: str | None = None
    valid: bool = True
    enhanced: list[str] = field(default_factory=list)
    decoded: str | None = None
    prompt: str | None = None
    notes: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    response_codes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # (lang, text) that must appear somewhere in render_text()
    says: list[tuple[str, str]] = field(default_factory=list)


QQ_EHLO = [
    "250-smtp.qq.com",
    "250-PIPELINING",
    "250-SIZE 73400320",
    "250-STARTTLS",
    "250-AUTH LOGIN PLAIN",
    "250-AUTH=LOGIN",
    "250-MAILCOMPRESS",
    "250 8BITMIME",
]

CASES = {
    "qq greeting": Case(["220 smtp.qq.com Esmtp QQ Mail Server"], after=AFTER_CONNECT, code="220",
                        says=[("en", "EHLO"), ("zh", "服务器已就绪")]),
    "username prompt": Case(["334 VXNlcm5hbWU6"], after="AUTH LOGIN", code="334", decoded="Username:", prompt="username",
                            says=[("en", "Username:"), ("zh", "用户名"), ("en", "dXNlckBleGFtcGxlLmNvbQ==")]),
    "password prompt": Case(["334 UGFzc3dvcmQ6"], after="c2VydmljZUBoZWVwLmNx", code="334", decoded="Password:", prompt="password",
                            says=[("zh", "授权码")]),
    "163 lower-case prompt": Case(["334 dXNlcm5hbWU6"], after="AUTH LOGIN", persona="163", code="334", decoded="username:",
                                  prompt="username", notes=["163-lowercase-username"]),
    "cram challenge": Case(["334 PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"], after="AUTH CRAM-MD5", code="334",
                           decoded="<1896.697170952@postoffice.reston.mci.net>", prompt="challenge",
                           says=[("en", "challenge to sign"), ("zh", "签名")]),
    "plain empty challenge": Case(["334 "], after="AUTH PLAIN", code="334", decoded="", prompt="initial",
                                  says=[("en", "initial response")]),
    "xoauth2 error": Case(["334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ=="],
                          after="AUTH XOAUTH2", code="334", prompt="error-detail", says=[("en", "empty line")]),
    "sina auth ok hash": Case(["235 #2.0.0 OK Authenticated"], after="c2VjcmV0", persona="sina", code="235", enhanced=["2.0.0"],
                              notes=["sina-hash-enhanced"], problems=["enhanced_hash_prefix"]),
    "qq auth code": Case(["535 Login Fail. Please enter your authorization code to login. More information in "
                          "http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256"],
                         after="YWJj", code="535", notes=["qq-authorization-code"], says=[("zh", "授权码")]),
    "qq requiered": Case(["530 Login fail. A secure connection is requiered(such as ssl). More information at "
                          "http://service.mail.qq.com/cgi-bin/help?id=28"], after="AUTH LOGIN", code="530",
                         notes=["qq-requiered"], says=[("en", "STARTTLS"), ("zh", "拼写错误")]),
    "qq need ehlo and auth": Case(["503 Error: need EHLO and AUTH first !"], after="MAIL FROM:<learner@qq.com>", code="503",
                                  notes=["qq-need-ehlo-and-auth"], says=[("en", "Wrong order")]),
    "qq same user": Case(["501 mail from address must be same as authorization user"], after="MAIL FROM:<x@qq.com>",
                         code="501", notes=["qq-same-as-authorization-user"]),
    "qq ehlo": Case(QQ_EHLO, after="EHLO sis", code="250",
                    capabilities=["PIPELINING", "SIZE", "STARTTLS", "AUTH", "AUTH=LOGIN", "MAILCOMPRESS", "8BITMIME"],
                    says=[("en", "smtp.qq.com"), ("zh", "QQ 邮箱私有"), ("en", "PLAIN:")]),
    "163 coremail ehlo": Case(["250-mail", "250-PIPELINING", "250-AUTH LOGIN PLAIN", "250-AUTH=LOGIN PLAIN", "250-coremail 1Uxr2xKj7kG0xkI17xGrU7I0s8FY2U3Uj8Cz28x1UUUUU7Ic2I0Y2UFRbmXhUCa0xDrUUUUj", "250-STARTTLS", "250 8BITMIME"],
                              after="EHLO x", code="250", says=[("zh", "Coremail")],
                              capabilities=["PIPELINING", "AUTH", "AUTH=LOGIN", "COREMAIL", "STARTTLS", "8BITMIME"]),
    "163 spam": Case(["554 DT:SPM 163 smtp10,DsCowAB3vY5 1700000000, please see http://mail.163.com/help/help_spam_16.htm?ip="],
                     after=AFTER_END_OF_DATA, code="554", notes=["163-dt-spm"], says=[("zh", "垃圾邮件")]),
    "163 relay": Case(["550 RP:FRL"], after="RCPT TO:<x@example.org>", code="550", notes=["163-rp-frl"]),
    "163 auth required": Case(["553 authentication is required,163 smtp12,abc 1700000000"], after="MAIL FROM:<a@163.com>",
                              code="553", notes=["163-authentication-required"]),
    "163 too many failures": Case(["451 Requested mail action not taken: too much fail authentication"], after="AUTH LOGIN",
                                  code="451", notes=["163-too-much-fail"]),
    "gmail bad credentials": Case(["535-5.7.8 Username and Password not accepted. For more information, go to",
                                   "535 5.7.8  https://support.google.com/mail/?p=BadCredentials abc - gsmtp"],
                                  after="UGFzc3dvcmQ=", code="535", enhanced=["5.7.8"], notes=["gmail-bad-credentials"],
                                  says=[("en", "Authentication credentials invalid"), ("zh", "应用专用密码")]),
    "outlook 5.7.57": Case(["530 5.7.57 Client not authenticated to send mail."], after="MAIL FROM:<a@contoso.com>",
                           code="530", enhanced=["5.7.57"], notes=["outlook-5-7-57"], says=[("en", "Microsoft 365")]),
    "outlook 5.7.139": Case(["535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."],
                            after="AUTH LOGIN", code="535", enhanced=["5.7.139"], notes=["outlook-5-7-139"]),
    "postfix relay": Case(["554 5.7.1 <u@remote.example>: Relay access denied"], after="RCPT TO:<u@remote.example>",
                          code="554", enhanced=["5.7.1"], notes=["postfix-relay-access-denied"],
                          says=[("en", "Delivery not authorized")]),
    "sina lenient mail from": Case(["250 sender <a@sina.com> ok"], after="MAIL FROM: a@sina.com", persona="sina", code="250",
                                   notes=["sina-mail-from-without-brackets"], says=[("zh", "尖括号")]),
    "sina auth without helo": Case(["334 VXNlcm5hbWU6"], after="auth login", persona="sina", code="334",
                                   prompt="username", notes=["sina-auth-without-helo"]),
    "etrn 253": Case(["253 OK, 14 pending messages for node example.org started"], after="ETRN example.org", code="253",
                     says=[("en", "ETRN")]),
    "etrn 251 vs forward": Case(["251 OK, no messages waiting for node example.org"], after="ETRN example.org", code="251",
                                says=[("en", "no messages are waiting"), ("zh", "没有等待")]),
    "251 after rcpt": Case(["251 User not local; will forward to <x@y>"], after="RCPT TO:<x@z>", code="251",
                           says=[("en", "forward")]),
    "unusual for command": Case(["354 go ahead"], after="RCPT TO:<a@b>", code="354", says=[("en", "not a reply the RFC lists"),
                                                                                          ("zh", "RFC 没有把 354")]),
    "unknown code": Case(["259 whatever"], code="259", says=[("en", "first digit"), ("zh", "第一位数字")]),
    "bad second digit": Case(["299 whatever"], code="299", problems=["bad_second_digit"], says=[("en", "between 0 and 5")]),
    "data end": Case(["250 Ok: queued as "], after=AFTER_END_OF_DATA, persona="qq", code="250", notes=["qq-queued-as"],
                     says=[("en", "queued for delivery")]),
    "pop3 greeting apop": Case(["+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>"], protocol="pop3",
                               after=AFTER_CONNECT, code="+OK", says=[("en", "APOP"), ("zh", "时间戳")]),
    "pop3 stat": Case(["+OK 4 226232"], protocol="pop3", after="STAT", code="+OK", says=[("en", "4 message(s), 226232 octets"),
                                                                                         ("zh", "共 4 封邮件")]),
    "pop3 list": Case(["+OK", "1 7514", "2 8000", "."], protocol="pop3", after="LIST", code="+OK",
                      says=[("en", "2 message(s) listed")]),
    "pop3 in-use": Case(["-ERR [IN-USE] Unable to lock maildrop"], protocol="pop3", after="PASS", code="-ERR",
                        response_codes=["IN-USE"], says=[("zh", "锁定")]),
    "pop3 sys/perm": Case(["-ERR [SYS/PERM] mailbox damaged"], protocol="pop3", after="PASS", code="-ERR",
                          response_codes=["SYS/PERM"], says=[("en", "support")]),
    "pop3 unknown resp code": Case(["-ERR [WHATEVER] hmm"], protocol="pop3", after="PASS", code="-ERR",
                                   response_codes=["WHATEVER"]),
    "pop3 auth continuation": Case(["+ VXNlcm5hbWU6"], protocol="pop3", after="AUTH LOGIN", code="+", decoded="Username:",
                                   prompt="username"),
    "pop3 gmail capa": Case(["+OK Capability list follows", "USER", "RESP-CODES", "EXPIRE 0", "LOGIN-DELAY 300",
                             "X-GOOGLE-VERHOEVEN", "UIDL", "."], protocol="pop3", after="CAPA", code="+OK",
                            capabilities=["USER", "RESP-CODES", "EXPIRE", "LOGIN-DELAY", "X-GOOGLE-VERHOEVEN", "UIDL"]),
    "pop3 qq auth code": Case(["-ERR Please using authorized code to login."], protocol="pop3", after="PASS", code="-ERR",
                              notes=["qq-pop3-authorized-code"]),
    "pop3 hoopy frood": Case(["+OK mrose is a real hoopy frood"], protocol="pop3", after="USER mrose", code="+OK",
                             notes=["rfc-hoopy-frood"], says=[("en", "PASS")]),
}


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("name", list(CASES))
def test_explain_table(name: str, lang: str) -> None:
    case = CASES[name]
    result = explain_reply(case.lines, protocol=case.protocol, after=case.after, persona=case.persona, lang=lang)
    assert result.valid is case.valid
    assert result.code == case.code
    assert result.lang == lang
    assert [e.code for e in result.enhanced] == case.enhanced
    if case.decoded is not None:
        assert result.challenge is not None and result.challenge.decoded == case.decoded
    if case.prompt is not None:
        assert result.challenge is not None and result.challenge.prompt == case.prompt
    else:
        assert result.challenge is None or result.challenge.prompt is None
    for note in case.notes:
        assert note in result.persona_note_ids
    assert [c.keyword for c in result.capabilities] == case.capabilities
    assert [c.code for c in result.response_codes] == case.response_codes
    assert result.problem_keys == case.problems
    assert result.next_steps, "every reply gets advice"
    text = result.render_text()
    for want_lang, snippet in case.says:
        if want_lang == lang:
            assert snippet in text
    if lang == "zh":
        assert CJK.search(text)
    else:
        assert result.meaning and not CJK.search(result.meaning)


def test_digits_are_explained_one_by_one() -> None:
    result = explain_reply(["452 4.5.3 Error: too many recipients"], after="RCPT TO:<a@b>", lang="en")
    assert [(d.position, d.digit) for d in result.digits] == [(1, "4"), (2, "5"), (3, "2")]
    assert "Transient" in result.digits[0].meaning and "Mail system" in result.digits[1].meaning
    note = result.enhanced[0]
    assert (note.code, note.detail_title) == ("4.5.3", "Too many recipients")
    assert "Persistent transient" in note.class_meaning and "protocol" in note.subject_meaning


def test_context_uses_listed_replies() -> None:
    listed = explain_reply(["552 too big"], after="RCPT TO:<a@b>", lang="en")
    assert listed.context and "storage" in listed.context
    failure = explain_reply(["455 later"], after="RCPT TO:<a@b>", lang="en")
    assert failure.context == "455 is one of the failures RFC lists for RCPT."
    anywhere = explain_reply(["421 bye"], after="NOOP", lang="en")
    assert anywhere.context and "any command" in anywhere.context
    assert explain_reply(["250 ok"], lang="en").context is None


def test_the_same_code_reads_differently_after_different_commands() -> None:
    after_vrfy = explain_reply(["252 2.0.0 ted"], after="VRFY ted", lang="en")
    after_etrn = explain_reply(["252 OK, pending messages for node x started"], after="ETRN x", lang="en")
    assert after_vrfy.meaning != after_etrn.meaning
    assert "verify" in after_vrfy.meaning and "ETRN" in after_etrn.meaning


def test_password_is_not_echoed_for_pop3_pass() -> None:
    # The session passes after="PASS"; explaining with the full line must still work.
    result = explain_reply(["-ERR [AUTH] Username and password not accepted."], protocol="pop3", after="PASS hunter2", lang="en")
    assert result.response_codes[0].code == "AUTH"
    assert "gmail-pop3-auth" in result.persona_note_ids


# --- garbage never breaks the explainer ------------------------------------------------------


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([], "empty"),
        ("", "empty"),
        (["   "], "empty"),
        (["hello world"], None),
        (["MAIL FROM:<a@b>"], "looks_like_command"),
        (["\x00\xff\x1b[31m"], None),
        (b"\xff\xfe garbage", None),
        (["2500 ok"], None),
        (["25 ok"], None),
        (["." * 2000], None),
    ],
)
def test_garbage_is_explained_not_raised(protocol: str, lines, problem: str | None) -> None:
    for lang in ("en", "zh"):
        result = explain_reply(lines, protocol=protocol, lang=lang)
        assert result.valid is False
        assert result.code is None
        assert result.meaning
        assert result.render_text()
        if problem:
            assert problem in result.problem_keys


def test_wrong_protocol_is_pointed_out() -> None:
    as_smtp = explain_reply(["+OK ready"], protocol="smtp", lang="en")
    assert not as_smtp.valid and "looks_like_pop3" in as_smtp.problem_keys
    as_pop3 = explain_reply(["250 ok"], protocol="pop3", lang="zh")
    assert not as_pop3.valid and "looks_like_smtp" in as_pop3.problem_keys
    assert "SMTP" in as_pop3.render_text()


def test_odd_but_parseable_replies_are_flagged() -> None:
    result = explain_reply(["650 weird"], lang="en")
    assert result.valid and "bad_first_digit" in result.problem_keys
    assert "first digit" in " ".join(result.next_steps)
    result = explain_reply(["250-first", "251 second"], lang="zh")
    assert "mixed_codes" in result.problem_keys
    assert "不一致" in result.render_text()
    result = explain_reply(["334 this is not base64!"], after="AUTH LOGIN", lang="en")
    assert result.challenge is not None and result.challenge.decoded is None


def test_bytes_and_crlf_blocks_are_accepted() -> None:
    result = explain_reply(b"250-a.example\r\n250-SIZE 1000\r\n250 HELP\r\n", after="EHLO me", lang="en")
    assert [c.keyword for c in result.capabilities] == ["SIZE", "HELP"]


def test_unknown_capability_is_said_to_be_private() -> None:
    result = explain_reply(["250-x", "250 XYZZY 42"], after="EHLO me", lang="en")
    assert result.capabilities[0].known is False and "private" in result.capabilities[0].meaning


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=80), max_size=6),
    st.sampled_from(["smtp", "pop3"]),
    st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["AUTH LOGIN", "EHLO x", ".", "CAPA", "LIST", AFTER_CONNECT])),
    st.one_of(st.none(), st.sampled_from(["qq", "sina", "163", "gmail", "outlook", "postfix", "rfc", "nobody"])),
    st.sampled_from(["en", "zh"]),
)
def test_explainer_never_raises(lines, protocol, after, persona, lang) -> None:
    result = explain_reply(lines, protocol=protocol, after=after, persona=persona, lang=lang)
    assert isinstance(result.render_text(), str)


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[2-5][0-5][0-9][ -][0-9. a-zA-Z+/=#]{0,40}", fullmatch=True), st.sampled_from(["en", "zh"]))
def test_reply_shaped_text_is_always_valid(line: str, lang: str) -> None:
    result = explain_reply([line], lang=lang)
    assert result.valid and result.code == line[:3] and len(result.digits) == 3
