"""SMTP server behaviour through a fake transport: every command and error path of RFC 5321 and
the extensions the personas advertise."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from fakes import smtp
from mailprotocol import codec as sasl
from mockservers.profile import load_profile

SEED_QQ = [
    ("helo sis", ["250 smtp.qq.com"]),
    ("auth login", ["334 VXNlcm5hbWU6"]),
    (sasl.b64encode_text("learner@qq.com"), ["334 UGFzc3dvcmQ6"]),
    (sasl.b64encode_text("abcdefghijklmnop"), ["235 Authentication successful"]),
    ("mail from: <learner@qq.com>", ["250 Ok"]),
    ("rcpt to: <friend@qq.com>", ["250 Ok"]),
    ("data", ["354 End data with <CR><LF>.<CR><LF>"]),
]


def test_seed_qq_session_reply_for_reply(tmp_path):
    h = smtp(tmp_path, "qq")
    assert h.greeting == ["220 smtp.qq.com Esmtp QQ Mail Server"]
    for line, expected in SEED_QQ:
        assert h.send(line) == expected, line
    assert h.raw(b"to: hello\r\nfrom: nian\r\nsubject: this is a test telnet smtp mail\r\n\r\nhello,telnet\r\n.\r\n") == [
        "250 Ok: queued as "
    ]
    assert h.send("quit") == ["221 Bye"]
    messages = h.store.messages("friend@qq.com")
    assert len(messages) == 1
    content = h.store.read("friend@qq.com", messages[0].uid)
    assert content.endswith(b"to: hello\r\nfrom: nian\r\nsubject: this is a test telnet smtp mail\r\n\r\nhello,telnet\r\n")
    assert re.match(
        rb"Return-Path: <learner@qq\.com>\r\n"
        rb"Received: from sis \(localhost \[127\.0\.0\.1\]\)\r\n"
        rb"\tby smtp\.qq\.com \(maillab qq\) with SMTP id [0-9A-F]{10}\r\n"  # HELO: RFC 3848's S and A follow only ESMTP
        rb"\tfor <friend@qq\.com>; .+\r\nto: hello",
        content,
    ), content[:300]


def test_received_names_the_recipient_only_when_there_is_one_and_carries_the_queue_id(tmp_path):
    """Postfix's trace line (PROTOCOL-FACTS: RFC 5321 4.4 with `id` and `for` only for one recipient)."""
    h = smtp(tmp_path, "rfc")
    h.send("EHLO client.example")
    h.send("MAIL FROM:<alice@example.com>")
    h.send("RCPT TO:<bob@example.com>")
    h.send("RCPT TO:<tim@example.com>")
    h.send("DATA")
    reply = h.raw(b"Subject: two\r\n\r\nhi\r\n.\r\n")[0]
    queue_id = reply.rsplit(" ", 1)[1]
    assert re.fullmatch(r"[0-9A-F]{10}", queue_id), reply
    for address in ("bob@example.com", "tim@example.com"):
        content = h.store.read(address, h.store.messages(address)[0].uid)
        received = content.split(b"\r\nSubject:")[0].split(b"Received: ", 1)[1]
        assert f"with ESMTP id {queue_id}; ".encode() in received, received
        assert b"for <" not in received


def test_seed_sina_session_auth_without_helo_and_no_brackets(tmp_path):
    h = smtp(tmp_path, "sina")
    assert h.greeting == ["220 smtp ready"]
    assert h.send("auth login") == ["334 VXNlcm5hbWU6"]
    assert h.send(sasl.b64encode_text("service@sina.com")) == ["334 UGFzc3dvcmQ6"]
    assert h.send(sasl.b64encode_text("sina-secret")) == ["235 go ahead"]
    assert h.send("MAIL FROM: service@sina.com") == ["250 sender <service@sina.com> ok"]
    assert h.send("RCPT to: friend@sina.com") == ["250 recipient <friend@sina.com> ok"]
    assert h.send("RCPT to: someone@example.org") == ["250 recipient <someone@example.org> ok"]
    assert h.send("DATA") == ["354 go ahead"]
    reply = h.raw(b"Subject: Hi smtp mail\r\n\r\nhello mail\r\n.\r\n")
    assert len(reply) == 1 and reply[0].startswith("250 ok: Message ") and reply[0].endswith(" accepted")
    assert reply[0].split()[3].isdigit()
    assert len(h.store.messages("friend@sina.com")) == 1
    assert h.store.queued_count("example.org") == 1


def test_rfc_greeting_and_ehlo_capabilities(tmp_path):
    h = smtp(tmp_path)
    assert h.greeting == ["220 mail.example.com ESMTP Postfix"]
    assert h.send("EHLO client.example") == [
        "250-mail.example.com",
        "250-PIPELINING",
        "250-SIZE 10240000",
        "250-VRFY",
        "250-ETRN",
        "250-STARTTLS",
        "250-AUTH PLAIN LOGIN CRAM-MD5",
        "250-ENHANCEDSTATUSCODES",
        "250-8BITMIME",
        "250-DSN",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]
    assert h.send("HELO client.example") == ["250 mail.example.com"]


def test_qq_ehlo_matches_the_real_server(tmp_path):
    h = smtp(tmp_path, "qq")
    assert h.send("EHLO x") == [
        "250-smtp.qq.com",
        "250-PIPELINING",
        "250-SIZE 73400320",
        "250-STARTTLS",
        "250-AUTH LOGIN PLAIN",
        "250-AUTH=LOGIN",
        "250-MAILCOMPRESS",
        "250 8BITMIME",
    ]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["EHLO x", "RCPT TO:<bob@example.com>"], "503 5.5.1 Error: need MAIL command"),
        (["EHLO x", "MAIL FROM:<alice@example.com>", "MAIL FROM:<alice@example.com>"], "503 5.5.1 Error: nested MAIL command"),
        (["EHLO x", "DATA"], "503 5.5.1 Error: need MAIL command"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "DATA"], "503 5.5.1 Error: need RCPT command"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<nobody@example.com>", "DATA"], "554 5.5.1 Error: no valid recipients"),
        (["MAIL FROM:<alice@example.com>"], "503 5.5.1 Error: send HELO/EHLO first"),
        (["AUTH PLAIN"], "503 5.5.1 Error: send HELO/EHLO first"),
        (["EHLO x", "DATA x"], "501 5.5.4 Syntax: DATA"),
        (["RSET now"], "501 5.5.4 Syntax: RSET"),
        (["QUIT please"], "501 5.5.4 Syntax: QUIT"),
        (["EHLO"], "501 5.5.4 Syntax: EHLO hostname"),
        (["HELO"], "501 5.5.4 Syntax: HELO hostname"),
        (["FOO bar"], "500 5.5.2 Error: command not recognized"),
        (["EHOL x"], "500 5.5.2 Error: command not recognized"),
        (["TURN"], "502 5.5.1 Error: command not implemented"),
        (["EHLO x", "ATRN example.com"], "502 5.5.1 Error: command not implemented"),
        (["EHLO x", "MAIL FROM: <alice@example.com>"], "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (["EHLO x", "MAIL FROM:alice@example.com"], "501 5.1.7 Bad sender address syntax"),
        (["EHLO x", "MAIL FROM:<alice@@example.com>"], "501 5.1.7 Bad sender address syntax"),
        (["EHLO x", "MAIL TO:<alice@example.com>"], "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<>"], "501 5.1.3 Bad recipient address syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<bob@example.com"], "501 5.1.3 Bad recipient address syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<x@remote.test>"], "554 5.7.1 <x@remote.test>: Relay access denied"),
        (
            ["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<nobody@example.com>"],
            "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table",
        ),
        (["EHLO x", "MAIL FROM:<a@example.com> SIZE=99999999"], "552 5.3.4 Message size exceeds fixed limit"),
        (["EHLO x", "MAIL FROM:<a@example.com> SIZE=big"], "501 5.5.4 Bad SIZE parameter syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com> FOO=bar"], "555 5.5.4 Unsupported option: FOO=bar"),
        (["EHLO x", "MAIL FROM:<a@example.com> BODY=BINARYMIME"], "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
        (["EHLO x", "MAIL FROM:<a@example.com> RET=ALL"], "501 5.5.4 Bad RET parameter syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com> ENVID=a=b"], "501 5.5.4 Bad ENVID parameter syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com> SIZE=1 SIZE=2"], "501 5.1.7 Bad sender address syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<bob@example.com> NOTIFY=NEVER,SUCCESS"], "501 5.5.4 Bad NOTIFY parameter syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<bob@example.com> ORCPT=bob"], "501 5.5.4 Bad ORCPT parameter syntax"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "RCPT TO:<bob@example.com> FOO"], "555 5.5.4 Unsupported option: FOO"),
        (["EHLO x", "MAIL FROM:<ü@example.com>"], "553 5.6.7 Must declare SMTPUTF8 to send UTF-8 addresses"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "AUTH PLAIN"], "503 5.5.1 Error: MAIL transaction in progress"),
        (["EHLO x", "MAIL FROM:<a@example.com>", "ETRN example.org"], "503 5.5.1 Error: MAIL transaction in progress"),
        (["EHLO x", "ETRN"], "501 5.5.4 Syntax: ETRN domain"),
        (["EHLO x", "ETRN example.org"], "251 2.0.0 OK, no messages waiting for node example.org"),
        (["EHLO x", "AUTH"], "501 5.5.4 Syntax: AUTH mechanism"),
        (["EHLO x", "AUTH GSSAPI"], "504 5.5.4 Unsupported authentication mechanism: GSSAPI"),
        (["EHLO x", "AUTH PLAIN !!!"], "501 5.5.2 Cannot decode response"),
        (["EHLO x", "AUTH PLAIN " + sasl.b64encode_text("no-separators")], "501 5.5.4 Malformed authentication data: AUTH PLAIN needs exactly two NUL separators (authzid\\0user\\0pass), found 0"),
        (["EHLO x", "AUTH PLAIN " + sasl.plain_payload("alice@example.com", "wrong")], "535 5.7.8 Error: authentication failed: authentication failure"),
        (["EHLO x", "AUTH LOGIN", "*"], "501 5.7.0 Authentication aborted"),
        (["EHLO x", "AUTH CRAM-MD5 abc"], "501 5.5.4 Malformed authentication data: CRAM-MD5 takes no initial response"),
        (["EHLO x", "STARTTLS now"], "501 5.5.4 Syntax: STARTTLS"),
        (["VRFY bob@example.com"], "252 2.0.0 bob@example.com"),
        (["VRFY"], "501 5.5.4 Syntax: VRFY address"),
        (["EXPN staff"], "252 2.0.0 staff"),
        (["HELP MAIL"], "214 2.0.0 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=<address>]"),
        (["HELP FROB"], "504 5.5.2 HELP topic unknown: FROB"),
        (["NOOP anything"], "250 2.0.0 Ok"),
        (["EHLO x", "BDAT x"], "501 5.5.4 Syntax: BDAT count [LAST]"),
    ],
)
def test_rfc_replies(tmp_path, lines, expected):
    h = smtp(tmp_path)
    for line in lines[:-1]:
        h.send(line)
    assert h.send(lines[-1])[-1] == expected
    # The session always goes on after an error.
    assert h.send("NOOP") == ["250 2.0.0 Ok"]


@pytest.mark.parametrize(
    "profile, lines, expected",
    [
        ("qq", ["HELO x", "MAIL FROM:<learner@qq.com>"], "503 Error: need EHLO and AUTH first !"),
        ("qq", ["MAIL FROM:<learner@qq.com>"], "503 Error: need EHLO and AUTH first !"),
        ("qq", ["EHLO x", "AUTH CRAM-MD5"], "504 Unsupported authentication mechanism: CRAM-MD5"),
        ("qq", ["EHLO x", "BDAT 5 LAST"], "500 Error: command not recognized"),
        (
            "qq",
            ["EHLO x", "AUTH PLAIN " + sasl.plain_payload("learner@qq.com", "password123")],
            "535 Login Fail. Please enter your authorization code to login. More information in http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256",
        ),
        (
            "qq",
            ["EHLO x", "AUTH PLAIN " + sasl.plain_payload("learner@qq.com", "abcdefghijklmnop"), "MAIL FROM:<friend@qq.com>"],
            "501 mail from address must be same as authorization user",
        ),
        (
            "qq",
            ["EHLO x", "AUTH PLAIN " + sasl.plain_payload("learner@qq.com", "abcdefghijklmnop"), "MAIL FROM:<learner@qq.com>", "RCPT TO:<nobody@qq.com>"],
            "550 The recipient may contain a non-existent account, please check the recipient address.",
        ),
        (
            "qq",
            ["EHLO x", "AUTH PLAIN " + sasl.plain_payload("learner@qq.com", "abcdefghijklmnop"), "MAIL FROM:<learner@qq.com> RET=FULL"],
            "555 Unsupported option: RET=FULL",
        ),
        ("sina", ["MAIL FROM:<a@sina.com>", "MAIL FROM:<a@sina.com>"], "503 one MAIL per message (#5.5.1)"),
        ("sina", ["RCPT TO:<friend@sina.com>"], "503 MAIL first (#5.5.1)"),
        ("sina", ["MAIL FROM:a@sina.com", "RCPT TO:x@remote.test"], "553 sorry, that domain isn't in my list of allowed rcpthosts. (#5.7.1)"),
    ],
)
def test_persona_replies(tmp_path, profile, lines, expected):
    h = smtp(tmp_path, profile)
    for line in lines[:-1]:
        h.send(line)
    assert h.send(lines[-1])[-1] == expected


def test_qq_web_password_is_named_in_the_event(tmp_path):
    h = smtp(tmp_path, "qq")
    seen = []
    h.events.subscribe(seen.append)
    h.send("EHLO x")
    h.send("AUTH PLAIN " + sasl.plain_payload("learner@qq.com", "password123"))
    failures = [e for e in seen if e.kind == "authentication failed"]
    assert failures and "web password used instead of the authorization code" in failures[0].detail


def _transaction(h, sender="alice@example.com", recipients=("bob@example.com",)):
    h.send("EHLO client.example")
    assert h.send(f"MAIL FROM:<{sender}>")[0].startswith("250")
    for rcpt in recipients:
        assert h.send(f"RCPT TO:<{rcpt}>")[0].startswith("250"), rcpt


def test_data_undoes_dot_stuffing_exactly_once_and_bare_lf_never_ends(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    assert h.send("DATA")[0].startswith("354")
    body = b"Subject: dots\r\n\r\n..one dot\r\n...two dots\r\nsmuggle\n.\nMAIL FROM:<evil@example.com>\r\nend\r\n.\r\n"
    replies = h.raw(body)
    assert len(replies) == 1 and replies[0].startswith("250 2.0.0 Ok: queued as ")
    (message,) = h.store.messages("bob@example.com")
    content = h.store.read("bob@example.com", message.uid)
    assert content.endswith(
        b"Subject: dots\r\n\r\n.one dot\r\n..two dots\r\nsmuggle\r\n.\r\nMAIL FROM:<evil@example.com>\r\nend\r\n"
    )


@pytest.mark.parametrize(
    "body, noticed",
    [
        (b"a\n.\nb\r\n.\r\n", True),  # LF . LF
        (b"a\r\n.\nb\r\n.\r\n", True),  # CRLF . LF
        (b"a\n.\r\nb\r\n.\r\n", True),  # LF . CRLF
        (b"a\r\n..\r\nb\r\n.\r\n", False),  # a stuffed dot, then the real end
    ],
)
def test_a_dot_line_with_a_bare_lf_is_named_and_does_not_end_data(tmp_path, body, noticed):
    h = smtp(tmp_path)
    seen: list[str] = []
    h.events.subscribe(lambda event: seen.append(event.kind))
    _transaction(h)
    assert h.send("DATA")[0].startswith("354")
    assert h.raw(body)[0].startswith("250 2.0.0 Ok: queued as ")
    assert ("waiting for CRLF.CRLF" in seen) is noticed


def test_data_terminator_split_across_packets(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    h.send("DATA")
    assert h.raw(b"Subject: split\r\n\r\nbody\r") == []
    assert h.raw(b"\n.") == []
    assert h.raw(b"\r") == []
    replies = h.raw(b"\nNOOP\r\n")
    assert replies[0].startswith("250 2.0.0 Ok: queued as ") and replies[1] == "250 2.0.0 Ok"
    (message,) = h.store.messages("bob@example.com")
    assert h.store.read("bob@example.com", message.uid).endswith(b"Subject: split\r\n\r\nbody\r\n")


def test_empty_message_and_pipelined_command_after_dot(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    h.send("DATA")
    replies = h.raw(b".\r\nNOOP\r\n")
    assert replies[0].startswith("250 2.0.0 Ok: queued as") and replies[1] == "250 2.0.0 Ok"
    (message,) = h.store.messages("bob@example.com")
    headers = h.store.read("bob@example.com", message.uid)
    assert headers.startswith(b"Return-Path: <alice@example.com>\r\n") and headers.endswith(b"\r\n")
    assert headers.count(b"\r\n") == 4  # only the trace headers: the message itself was empty


def test_data_in_many_small_packets(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    h.send("DATA")
    payload = b"Subject: slow\r\n\r\nbyte at a time\r\n.line\r\n.\r\n"
    replies = []
    for index in range(len(payload)):
        replies += h.raw(payload[index : index + 1])
    assert len(replies) == 1 and replies[0].startswith("250")
    (message,) = h.store.messages("bob@example.com")
    assert h.store.read("bob@example.com", message.uid).endswith(b"\r\n\r\nbyte at a time\r\nline\r\n")


def test_message_over_the_size_limit_is_refused_without_buffering_it(tmp_path):
    profile = load_profile("rfc")
    profile = dataclasses.replace(profile, policies=dataclasses.replace(profile.policies, max_message_size=1000))
    h = smtp(tmp_path, profile)
    _transaction(h)
    h.send("DATA")
    for _ in range(100):
        assert h.raw(b"x" * 78 + b"\r\n") == []
        assert sum(len(c) for c in h.session.envelope.chunks) <= 1000
    assert h.raw(b".\r\n") == ["552 5.3.4 Message size exceeds fixed limit"]
    assert h.store.messages("bob@example.com") == []
    assert h.send("MAIL FROM:<alice@example.com>") == ["250 2.1.0 Ok"]


def test_bdat_message_content_and_data_after_bdat(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    assert h.raw(b"BDAT 16\r\nSubject: c\r\n\r\n.x") == ["250 2.0.0 Ok: 16 octets received"]
    assert h.send("DATA") == ["503 5.5.1 Error: BDAT in progress, DATA not allowed"]
    replies = h.raw(b"BDAT 5 LAST\r\n\r\n.\r\n")
    assert len(replies) == 1 and replies[0].startswith("250 2.0.0 Ok: queued as ")
    (message,) = h.store.messages("bob@example.com")
    assert h.store.read("bob@example.com", message.uid).endswith(b"Subject: c\r\n\r\n.x\r\n.\r\n")


def test_bdat_refused_chunk_is_still_consumed(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    assert h.raw(b"BDAT 12\r\nQUIT\r\nQUIT\r\n") == ["503 5.5.1 Error: need MAIL command"]
    assert not h.closed
    assert h.send("NOOP") == ["250 2.0.0 Ok"]


def test_bdat_zero_last(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    assert h.raw(b"BDAT 3\r\nabc")[0].startswith("250")
    assert h.send("BDAT 0 LAST")[0].startswith("250 2.0.0 Ok: queued as")


def test_pipelined_commands_get_replies_in_order(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    batch = b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<mrose@example.com>\r\nDATA\r\n"
    replies = h.raw(batch)
    assert [r[:3] for r in replies] == ["250", "250", "550", "250", "354"]
    replies = h.raw(b"Subject: p\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n")
    assert [r[:3] for r in replies] == ["250", "250", "250", "221"]
    assert len(h.store.messages("bob@example.com")) == 1 and len(h.store.messages("mrose@example.com")) == 1


def test_unknown_commands_never_disconnect(tmp_path):
    h = smtp(tmp_path)
    for index in range(50):
        assert h.send(f"BOGUS{index}") == ["500 5.5.2 Error: command not recognized"]
    assert not h.closed
    assert h.send("NOOP") == ["250 2.0.0 Ok"]


def test_overlong_line_is_answered_and_never_held(tmp_path):
    h = smtp(tmp_path)
    assert h.send("NOOP " + "x" * 600) == ["500 5.5.6 Error: command line too long"]
    for _ in range(100):
        assert h.raw(b"y" * 10_000) == []
        assert len(h.session._pending) <= 512
    assert h.raw(b"\r\nNOOP\r\n") == ["500 5.5.6 Error: command line too long", "250 2.0.0 Ok"]


def test_bare_lf_command_lines_from_nc(tmp_path):
    h = smtp(tmp_path)
    assert h.raw(b"EHLO x\nNOOP\n")[-1] == "250 2.0.0 Ok"


@pytest.mark.parametrize("data", [b"NO\x00OP\r\n", b"NOOP \xff\xfe\r\n", b"\xc3\x28\r\n"])
def test_nul_and_invalid_utf8_get_a_syntax_error(tmp_path, data):
    h = smtp(tmp_path)
    assert h.raw(data) == ["500 5.5.2 Error: bad character in command (NUL or invalid UTF-8)"]
    assert h.send("NOOP") == ["250 2.0.0 Ok"]


def test_smtputf8_declared_allows_utf8_addresses(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    assert h.send("MAIL FROM:<üser@example.com> SMTPUTF8") == ["250 2.1.0 Ok"]
    assert h.send("RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com") == ["250 2.1.5 Ok"]


def test_mail_parameters_accepted(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    assert h.send("MAIL FROM:<> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ314159+2B AUTH=<>") == ["250 2.1.0 Ok"]


def test_max_recipients(tmp_path):
    profile = load_profile("rfc")
    profile = dataclasses.replace(profile, policies=dataclasses.replace(profile.policies, max_recipients=2))
    h = smtp(tmp_path, profile)
    _transaction(h, recipients=("bob@example.com", "mrose@example.com"))
    assert h.send("RCPT TO:<tim@example.com>") == ["452 4.5.3 Error: too many recipients"]


def test_rset_and_ehlo_reset_the_transaction(tmp_path):
    h = smtp(tmp_path)
    _transaction(h)
    assert h.send("RSET") == ["250 2.0.0 Ok"]
    assert h.send("DATA") == ["503 5.5.1 Error: need MAIL command"]
    _transaction(h)
    h.send("EHLO again")
    assert h.send("RCPT TO:<bob@example.com>") == ["503 5.5.1 Error: need MAIL command"]


@pytest.mark.parametrize(
    "mechanism, exchange",
    [
        ("PLAIN", lambda ch: [("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"), "235")]),
        ("PLAIN", lambda ch: [("AUTH PLAIN", "334"), (sasl.plain_payload("alice@example.com", "alice-secret"), "235")]),
        ("PLAIN", lambda ch: [("AUTH PLAIN " + sasl.plain_payload("alice", "alice-secret", authzid="alice"), "235")]),
        ("LOGIN", lambda ch: [("AUTH LOGIN", "334"), (sasl.b64encode_text("alice@example.com"), "334"), (sasl.b64encode_text("alice-secret"), "235")]),
        ("LOGIN", lambda ch: [("AUTH LOGIN " + sasl.b64encode_text("alice@example.com"), "334"), (sasl.b64encode_text("alice-secret"), "235")]),
    ],
)
def test_auth_success(tmp_path, mechanism, exchange):
    h = smtp(tmp_path)
    h.send("EHLO x")
    for line, code in exchange(None):
        assert h.send(line)[-1][:3] == code, line
    assert h.session.authenticated_as == "alice@example.com"
    assert h.send("AUTH PLAIN") == ["503 5.5.1 Error: already authenticated"]


def test_auth_cram_md5_with_the_rfc_2195_user(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    (challenge_line,) = h.send("AUTH CRAM-MD5")
    assert challenge_line.startswith("334 ")
    challenge = sasl.b64decode_strict(challenge_line[4:])
    assert challenge.startswith(b"<") and challenge.endswith(b"@mail.example.com>")
    assert h.send(sasl.cram_md5_response("tim@example.com", "tanstaaftanstaaf", challenge)) == [
        "235 2.7.0 Authentication successful"
    ]


def test_auth_login_prompts_are_the_seed_ones(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    assert h.send("AUTH LOGIN") == ["334 VXNlcm5hbWU6"]
    assert h.send("YWxpY2VAZXhhbXBsZS5jb20=") == ["334 UGFzc3dvcmQ6"]
    assert h.send("bad base64 !") == ["501 5.5.2 Cannot decode response"]
    assert h.send("NOOP") == ["250 2.0.0 Ok"]


def test_authenticated_relay_goes_to_the_queue_and_etrn_reports_it(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    h.send("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
    _transaction(h, recipients=("friend@remote.test", "bob@example.com"))
    h.send("DATA")
    assert h.raw(b"Subject: out\r\n\r\nbye\r\n.\r\n")[0].startswith("250")
    assert h.store.queued_count("remote.test") == 1
    assert h.send("ETRN remote.test") == ["253 2.0.0 OK, 1 pending messages for node remote.test started"]
    assert h.send("ETRN @remote.test")[0].startswith("253")
    assert len(h.store.messages("bob@example.com")) == 1


def test_starttls_resets_the_session_and_is_not_offered_twice(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    h.send("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
    # Anything pipelined behind STARTTLS belongs to the plain session and is dropped.
    assert h.raw(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n") == ["220 2.0.0 Ready to start TLS"]
    assert h.transport.tls_started_with is h.context.tls_options
    assert h.session.tls_active and h.session.authenticated_as is None
    assert h.send("MAIL FROM:<alice@example.com>") == ["503 5.5.1 Error: send HELO/EHLO first"]
    ehlo = h.send("EHLO x")
    assert "250-STARTTLS" not in ehlo and "250 STARTTLS" not in ehlo
    assert h.send("STARTTLS") == ["554 5.5.1 Error: TLS already active"]


def test_starttls_without_certificates(tmp_path):
    h = smtp(tmp_path, tls=False)
    h.send("EHLO x")
    assert h.send("STARTTLS") == ["454 4.7.0 TLS not available due to local problem"]


def test_vrfy_modes(tmp_path):
    base = load_profile("rfc")
    verify = dataclasses.replace(base, policies=dataclasses.replace(base.policies, vrfy="verify", expn="disabled"))
    h = smtp(tmp_path, verify)
    assert h.send("VRFY bob@example.com") == ["250 2.0.0 bob@example.com"]
    assert h.send("VRFY bob") == ["250 2.0.0 bob@example.com"]
    assert h.send("VRFY nobody@example.com")[0].startswith("550 5.1.1")
    assert h.send("EXPN staff") == ["502 5.5.1 EXPN command is disabled"]


def test_help_lists_the_commands(tmp_path):
    h = smtp(tmp_path)
    lines = h.send("HELP")
    assert lines[0] == "214-2.0.0 Commands supported:" and lines[-1].startswith("214 ")
    assert "STARTTLS" in lines[1] and "BDAT" in lines[1] and "TURN" not in lines[1]


def test_idle_timeout_closes_with_421(tmp_path):
    h = smtp(tmp_path)
    h.clock.advance(299)
    assert not h.closed
    h.send("NOOP")
    h.clock.advance(299)
    assert not h.closed
    h.clock.advance(2)
    assert h.take() == ["421 4.4.2 mail.example.com Error: timeout exceeded"]
    assert h.closed


def test_transcript_records_both_sides_and_redacts_secrets(tmp_path):
    h = smtp(tmp_path)
    h.send("EHLO x")
    h.send("AUTH PLAIN " + sasl.plain_payload("alice@example.com", "alice-secret"))
    h.send("AUTH LOGIN")
    h.send("QUIT")
    h.session.connectionLost(None)
    path = h.session.transcript.path
    records = [json.loads(line) for line in path.read_text().splitlines()]
    text = path.read_text()
    assert "alice-secret" not in text and sasl.plain_payload("alice@example.com", "alice-secret") not in text
    client = [r["line"] for r in records if r["dir"] == "c"]
    assert client[:2] == ["EHLO x", "AUTH PLAIN ***"]
    assert any(r["dir"] == "e" and r.get("event") == "authenticated" for r in records)
    assert [r["line"] for r in records if r["dir"] == "s"][0] == "220 mail.example.com ESMTP Postfix"


from hypothesis import example, given, settings, strategies as st


@settings(max_examples=150, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"a", b"..", b".", b"\r\n", b"\n", b"\r", b"x" * 7, b"\r\n.", b".\r\n"]), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_tcp_split_of_data_gives_the_same_message(tmp_path_factory, body, cuts):
    """However the bytes are split into segments, the stored message is the same."""
    from mailprotocol.parameters import unstuff

    content = b"".join(body)
    stuffed = (b"\r\n" + content).replace(b"\r\n.", b"\r\n..")[2:]  # what a client must send
    wire = stuffed + (b"" if stuffed.endswith(b"\r\n") or not stuffed else b"\r\n") + b".\r\n"
    h = smtp(tmp_path_factory.mktemp("split"))
    _transaction(h)
    h.send("DATA")
    points = sorted({c for c in cuts if c < len(wire)}) + [len(wire)]
    start, replies = 0, []
    for point in points:
        replies += h.raw(wire[start:point])
        start = point
    assert len(replies) == 1 and replies[0].startswith("250"), (wire, replies)
    (message,) = h.store.messages("bob@example.com")
    stored = h.store.read("bob@example.com", message.uid)
    expected = unstuff(wire[:-3])
    assert stored.endswith(expected)


@pytest.mark.parametrize(
    "rest, strict, problem, mailbox",
    [
        ("<a@b.example", True, "unclosed-bracket", None),
        ("<a@b.example>SIZE=1", True, "parameters-not-separated", None),
        ("", True, "no-address", None),
        ("<>", False, "empty", None),
        ("a@b.example", True, "missing-brackets", None),
        ("<@relay:a@b.example>x", True, "parameters-not-separated", None),
        ("<@relay a@b.example>", True, "source-route-malformed", None),
        ("<" + "a" * 300 + "@b.example>", True, "path-too-long", None),
        ("<ab.example>", True, "bad-mailbox", "no-at"),
        ("<" + "a" * 65 + "@b.example>", True, "bad-mailbox", "local-part-too-long"),
        ("<a b@bad_domain>", True, "bad-mailbox", "bad-domain"),
        ("<a b@b.example>", True, "bad-mailbox", "bad-local-part"),
        ("<a@b.example> =1", True, "parameter-malformed", None),
        ("<a@b.example> SIZE=1 size=2", True, "parameter-twice", None),
    ],
)
def test_address_refusals_carry_a_typed_problem(rest, strict, problem, mailbox):
    """The grammar decides why once; the validator maps the problem, never the English message."""
    from mailprotocol.addresses import AddressSyntaxError, parse_path

    with pytest.raises(AddressSyntaxError) as refused:
        parse_path(rest, strict=strict, allow_null=False)
    assert (refused.value.problem, refused.value.mailbox) == (problem, mailbox)


def test_parameter_refusal_names_the_parameter_and_why():
    from mailprotocol import smtp as core
    from mailprotocol.parameters import ParameterWhy

    profile = load_profile("rfc")
    state = core.SMTPState(helo="x", esmtp=True)
    cases = {
        "MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=x": ("SIZE", ParameterWhy.SYNTAX, "bad_parameter"),
        "MAIL FROM:<a@example.com> SIZE=999999999999": ("SIZE", ParameterWhy.SIZE_EXCEEDED, "size_exceeded_declared"),
        "MAIL FROM:<a@example.com> BODY=BINARYMIME": ("BODY", ParameterWhy.BINARYMIME, "unsupported_option"),
        "MAIL FROM:<a@example.com> X-FOO": ("X-FOO", ParameterWhy.UNKNOWN, "unsupported_option"),
    }
    for line, (key, why, reply) in cases.items():
        decision = core.decide(state, profile, line)
        assert decision.reason == "parameter"
        assert (decision.detail.key, decision.detail.why, decision.reply.key) == (key, why, reply), line


def _bare_lf_dot_by_hand(data: bytes, pos: int) -> bool:
    """Octet by octet: LF '.' then a line break, unless it is exactly CR LF '.' CR LF."""
    for i in range(pos, len(data) - 2):
        if data[i : i + 2] != b"\n.":
            continue
        after_crlf = data[i + 2 : i + 4] == b"\r\n"
        if data[i + 2 : i + 3] == b"\n" or (after_crlf and (i == 0 or data[i - 1 : i] != b"\r")):
            return True
    return False


@settings(max_examples=400, deadline=None)
@example(data=[b"\n.", b"\r\n", b"a", b"\r"], pos=0)  # the first line break is the stream's own start
@given(data=st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n."]), max_size=16), pos=st.integers(0, 40))
def test_the_bare_lf_dot_scan_finds_what_a_walk_over_the_octets_finds(data, pos):
    from mockservers.smtp import has_bare_lf_dot

    content = b"".join(data)
    pos = min(pos, len(content))
    assert has_bare_lf_dot(content, pos) is _bare_lf_dot_by_hand(content, pos)


_LINE_PIECES = [b"\r", b"\n", b"\r\n", b".", b"a", b"\n\r", b"\r\n."]


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(_LINE_PIECES), max_size=16))
def test_unstuff_and_the_file_form_agree_with_their_definitions(pieces):
    """The fast paths give what the plain rules give: dots unstuffed, every ending CRLF; in the file every CRLF or bare LF is LF."""
    from mailprotocol.parameters import unstuff
    from mockservers.store import to_stored

    content = b"".join(pieces)
    unstuffed = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")[2:]
    assert unstuff(content) == re.sub(rb"\r\n|\r|\n", b"\r\n", unstuffed)
    assert to_stored(content) == content.replace(b"\r\n", b"\n")
